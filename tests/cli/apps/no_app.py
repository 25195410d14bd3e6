"""A module with no roost.App in it."""

VALUE = 1
