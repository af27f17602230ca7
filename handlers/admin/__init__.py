"""/admin: the pages a company's front desk or IT person runs the system from (desktop, Chinese)."""
from . import auth, dashboard, keys, koala, logs, records, settings

default_handlers = [route for module in (auth, dashboard, records, logs, koala, settings, keys)
                    for route in module.default_handlers]
