"""The storage boundary: only wxapp/storage.py knows the driver and each collection is used by its
one owner (both read from the source; tests and benchmarks may look into the database directly),
and what the collection API answers, the contract a change of driver must keep."""
import ast
import pathlib

import pytest

from wxapp.storage import ASCENDING, DESCENDING, INDEXES, Collection, DuplicateKeyError, Updated

ROOT = pathlib.Path(__file__).resolve().parent.parent
DRIVERS = {"motor", "pymongo", "bson"}
# The driver's words: cursors and their methods, write results, options named after the driver.
DRIVER_WORDS = {"to_list", "bulk_write", "count_documents", "index_information", "create_index",
                "create_indexes", "matched_count", "modified_count", "deleted_count", "inserted_id", "upserted_id",
                "return_document", "ReturnDocument", "UpdateOne", "InsertOne", "DeleteOne", "IndexModel", "ObjectId",
                "explain", "get_database", "list_collection_names"}
# The one owner of each collection: the class whose methods use `storage.<collection>`.
OWNERS = {
    "api_keys": {"ApiKeys"},
    "admins": {"Admins"},
    "wechat_users": {"WeChatUsers"},
    "settings": {"SystemSettings"},
    "jobs": {"Retention"},
    "images": {"Images"},
    "bindings": {"Bindings"},
    "outbox": {"Outbox"},
    "passes": {"PassLog"},
    "revocations": {"Revocations"},
    "revoked_tokens": {"Revocations"},
    "koala_cleanup": {"Visits"},
    # Not one owner yet. Records: Visits keeps them, but the revocation path commits revocations on
    # them, the retention job anonymises them, the reminder notes itself on them, the outbox clears
    # their pending events and the gate reads a pass's record on a cache miss. Counters: small
    # documents, each with its own owner by _id (sequences, one-off upgrades, the image sweep).
    "records": {"Visits", "Revocations", "Retention", "Reminders", "Outbox", "GateCache"},
    "counters": {"Visits", "Images", "Retention", "Bindings"},
}


def product_modules() -> dict[str, str]:
    """Source of every module of the product, by path relative to the checkout."""
    paths = [ROOT / "server.py", *sorted((ROOT / "wxapp").rglob("*.py")), *sorted((ROOT / "handlers").rglob("*.py"))]
    return {str(path.relative_to(ROOT)): path.read_text(encoding="utf-8") for path in paths}


def driver_imports(source: str) -> list[str]:
    """The driver packages a module imports."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            continue
        found += [name for name in names if name.split(".")[0] in DRIVERS]
    return found


def _walk(source: str):
    """(node, class, function) for every node of a module: the class and the outermost function it
    lies in ("" when none)."""
    def visit(node: ast.AST, cls: str, func: str):
        if isinstance(node, ast.ClassDef):
            cls, func = node.name, ""
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            func = func or node.name
        yield node, cls, func
        for child in ast.iter_child_nodes(node):
            yield from visit(child, cls, func)

    return visit(ast.parse(source), "", "")


def driver_words(source: str) -> list[tuple[str, str]]:
    """(word, Class.function) for each of the driver's words a module uses, as an attribute, a name
    or a keyword argument."""
    found = []
    for node, cls, func in _walk(source):
        word = (node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name)
                else node.arg if isinstance(node, ast.keyword) else None)
        if word in DRIVER_WORDS:
            found.append((word, f"{cls}.{func}"))
    return found


def _is_storage(node: ast.AST) -> bool:
    """`storage`, `self.storage`, `ctx.storage`, ..."""
    return (isinstance(node, ast.Name) and node.id == "storage") or \
        (isinstance(node, ast.Attribute) and node.attr == "storage")


def collection_uses(source: str) -> list[tuple[str, str, str]]:
    """(collection, or `db`/`client`, the driver's own; class; function) for every `storage.<name>`
    in a module ("" for no class or function)."""
    return [(node.attr, cls, func) for node, cls, func in _walk(source)
            if isinstance(node, ast.Attribute) and _is_storage(node.value)
            and (node.attr in INDEXES or node.attr in ("db", "client"))]


def cursor_users(source: str) -> list[str]:
    """`Class.function` of every call of `.cursor(...)` on a collection of storage."""
    return [f"{cls}.{func}" for node, cls, func in _walk(source)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "cursor"
            and isinstance(node.func.value, ast.Attribute) and _is_storage(node.func.value.value)]


def test_no_module_outside_storage_imports_the_driver():
    offenders = {path: imports for path, source in product_modules().items()
                 if path != "wxapp/storage.py" and (imports := driver_imports(source))}
    assert offenders == {}
    assert {"pymongo", "motor.motor_asyncio"} <= set(driver_imports(product_modules()["wxapp/storage.py"]))


def test_the_import_check_sees_every_form_of_import():
    assert driver_imports("import bson\nfrom pymongo import ReturnDocument\nimport motor.motor_asyncio as m\n"
                          "from .storage import Storage\nimport json") == ["bson", "pymongo", "motor.motor_asyncio"]


def test_no_module_outside_storage_speaks_the_drivers_words():
    offenders = {path: words for path, source in product_modules().items()
                 if path != "wxapp/storage.py"
                 and (words := driver_words(source))}
    assert offenders == {}


def test_the_word_check_sees_cursors_results_and_driver_options():
    source = ("async def f(storage):\n"
              "    docs = await storage.records.find({}).to_list(None)\n"
              "    result = await storage.records.update_one({}, {})\n"
              "    doc = await storage.records.find_one_and_update({}, {}, return_document=True)\n"
              "    return result.modified_count\n")
    assert sorted(driver_words(source)) == [("modified_count", ".f"), ("return_document", ".f"), ("to_list", ".f")]


def test_every_collection_has_its_owners_declared():
    assert set(OWNERS) == set(INDEXES)


def test_each_collection_is_used_by_its_owner_alone():
    strangers = []
    for path, source in product_modules().items():
        if path == "wxapp/storage.py":
            continue
        for name, cls, func in collection_uses(source):
            if name in ("db", "client"):
                strangers.append(f"{path}: {cls}.{func} uses the driver's storage.{name}")
            elif cls not in OWNERS[name]:
                strangers.append(f"{path}: {cls or '<module>'}.{func} uses storage.{name}")
    assert strangers == []


def test_the_ownership_check_names_a_stranger():
    source = ("class Visits:\n"
              "    async def interviewee(self, phone):\n"
              "        return await self.storage.bindings.find_one({'phone': phone})\n"
              "class Stats:\n"
              "    async def days(self):\n"
              "        return self.storage.passes\n")
    uses = collection_uses(source)
    assert uses == [("bindings", "Visits", "interviewee"), ("passes", "Stats", "days")]
    assert [use for use in uses if use[1] not in OWNERS[use[0]]] == uses


def test_no_module_uses_a_drivers_cursor():
    users = {user for source in product_modules().values() for user in cursor_users(source)}
    assert users == set()
    assert not hasattr(Collection, "cursor")  # the collection API offers none


def test_the_cursor_check_names_a_user():
    source = ("class Outbox:\n"
              "    async def list(self):\n"
              "        return await self.storage.outbox.cursor({}).sort('created_at', -1).to_list(20)\n")
    assert cursor_users(source) == ["Outbox.list"]


# --- the collection API, against the real database ----------------------------------------------

@pytest.mark.gen_test
async def test_reads_answer_lists_and_walks_in_sorted_batches(ctx):
    jobs = ctx.storage.jobs
    for n in range(1, 8):
        await jobs.insert_one({"_id": n, "kind": "a" if n % 2 else "b", "n": n})
    assert await jobs.find({"kind": "a"}, {"n": 1}, sort=[("n", DESCENDING)], skip=1, limit=2) == [
        {"_id": 5, "n": 5}, {"_id": 3, "n": 3}]
    assert await jobs.find_one({"kind": "b"}, sort=[("n", DESCENDING)]) == {"_id": 6, "kind": "b", "n": 6}
    assert await jobs.count({"kind": "a"}) == 4 and await jobs.count({}, limit=2) == 2
    walked = []
    async for doc in jobs.each({}, {"_id": 1}, sort=[("n", ASCENDING)], batch_size=2):
        walked.append(doc["_id"])
        if len(walked) == 5:
            break  # leaving early ends the read
    assert walked == [1, 2, 3, 4, 5]
    assert await jobs.aggregate([{"$group": {"_id": "$kind", "total": {"$sum": "$n"}}}, {"$sort": {"_id": 1}}]) == [
        {"_id": "a", "total": 16}, {"_id": "b", "total": 12}]


@pytest.mark.gen_test
async def test_writes_answer_plain_counts_and_documents(ctx):
    jobs = ctx.storage.jobs
    await jobs.insert_one({"_id": 1, "state": "new"})
    with pytest.raises(DuplicateKeyError):
        await jobs.insert_one({"_id": 1})
    assert await jobs.update_one({"_id": 1, "state": "new"}, {"$set": {"state": "old"}}) == Updated(1, 1)
    assert await jobs.update_one({"_id": 1, "state": "new"}, {"$set": {"state": "x"}}) == Updated(0, 0)
    assert await jobs.update_one({"_id": 2}, {"$set": {"state": "new"}}, upsert=True) == Updated(0, 0)
    assert await jobs.replace_one({"_id": 2}, {"state": "replaced"}) == Updated(1, 1)
    assert await jobs.find_one_and_update({"_id": 1}, {"$set": {"state": "a"}}) == {"_id": 1, "state": "old"}
    assert await jobs.find_one_and_update({"_id": 1}, {"$set": {"state": "b"}}, projection={"state": 1},
                                          return_new=True) == {"_id": 1, "state": "b"}
    assert await jobs.find_one_and_update({"_id": 3, "state": "none"}, {"$set": {"n": 1}}) is None
    assert await jobs.bulk_update([({"_id": 1, "state": "b"}, {"$set": {"state": "c"}}),
                                   ({"_id": 2, "state": "no"}, {"$set": {"state": "c"}})]) == 1
    assert await jobs.update_many({}, {"$set": {"state": "c"}}) == Updated(2, 1)
    assert await jobs.find_one_and_delete({"_id": 2}) == {"_id": 2, "state": "c"}
    assert await jobs.delete_one({"_id": 2}) == 0
    assert await jobs.delete_many({}) == 1

