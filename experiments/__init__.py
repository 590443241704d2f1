"""Experiments that reproduce the article's runs with homax."""
