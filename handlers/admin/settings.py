"""TODO"""
default_handlers = []
