"""The HTTP front end: thin views over the model layer, one blueprint per concern."""
