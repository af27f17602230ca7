"""Statuses, roles, events, channels and their Chinese labels are defined once, in wxapp/: the HTTP
layer imports them and defines no list or label table of them of its own."""
import importlib
import pkgutil
import re

import handlers
import wxapp
from wxapp import auth, bindings, events, lifecycle, outbox

WORDS = {*lifecycle.STATUSES, *outbox.STATUSES, *(role.value for role in auth.Role), *events.EVENTS,
         *events.CHANNELS, *bindings.KIND_NAMES, *lifecycle.CANCELLED_BY_LABELS}
CHINESE = re.compile(r"[\u4e00-\u9fff]")


def modules(package):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        yield importlib.import_module(info.name)


def own_constants(module, imported: set[int]):
    """(name, value) of the module's upper-case constants that are not objects of wxapp/."""
    for name, value in vars(module).items():
        if name.isupper() and id(value) not in imported:
            yield name, value


def vocabulary_table(value) -> bool:
    """A list of vocabulary words, or a table giving them Chinese labels."""
    if isinstance(value, dict):
        keys = [k.value if hasattr(k, "value") else k for k in value]
        return (bool(keys) and all(isinstance(k, str) and k in WORDS for k in keys)
                and any(isinstance(v, str) and CHINESE.search(v) for v in value.values()))
    if isinstance(value, (tuple, list, set, frozenset)):
        return len(value) >= 2 and all(isinstance(v, str) and v in WORDS for v in value)
    return False


def test_handlers_define_no_statuses_roles_events_or_labels_of_their_own():
    imported = {id(value) for module in modules(wxapp) for value in vars(module).values()}
    found = [f"{module.__name__}.{name}" for module in modules(handlers)
             for name, value in own_constants(module, imported) if vocabulary_table(value)]
    assert found == []


def test_the_vocabulary_check_finds_a_label_table_and_a_list_of_statuses():
    assert vocabulary_table({"kiosk": "签到机", "gate": "闸机"})
    assert vocabulary_table(("failed", "skipped"))
    assert not vocabulary_table({"pending": "primary", "failed": "danger"})  # colours are the page's own
    assert not vocabulary_table(("date", "gate", "result"))
