"""JMAP for Sieve scripts (RFC 9661): SieveScript/get, /changes, /set,
/query and /validate, over ``storage.sieve.scripts`` (the list ManageSieve
edits too), and the VacationResponse methods (RFC 8621 section 8), which
read and write the generated vacation script (``storage.sieve.vacation``).

Choices:

- Ids are ``Z<row id>``. A script's content is a blob whose id is the
  content hash, as for uploads and messages (``blob_id_of``): an uploaded
  script and the stored one have the same blobId, and ``Backend.read_blob``
  finds scripts by it (``read_script_blob``; type ``application/sieve``),
  so the download URL and Blob/get serve them (GETSCRIPT's equivalent).
- /set reads the blob, which must be UTF-8; ``storage.sieve.compile`` judges
  it, and its ``SieveError`` (with the line) is the ``invalidSieve``
  description. A name taken is ``alreadyExists`` with ``existingId``; over
  the size ``tooLarge``; over the script count ``overQuota``; destroying the
  active script ``sieveIsActive``. ``isActive`` is server-set: only
  ``onSuccessDeactivateScript`` then ``onSuccessActivateScript`` (after every
  create, update and destroy of the call succeeded) change it, and every
  script whose ``isActive`` changed is reported in created/updated.
- The VacationResponse script (RFC 9661 section 4) is listed and may be
  (de)activated, but updating or destroying it is ``forbidden``, and no other
  script may take its name.
- Names: at most 255 characters (the store's column), which is at least the
  512 octets RFC 9661 asks ``maxSizeScriptName`` to allow for all but
  4-octet characters; a name given as null gets ``script-<n>``.
- /query filters on ``name`` (substring, case-insensitive) and ``isActive``,
  sorts on ``name`` and ``isActive``; /queryChanges is not offered (the list
  is small; clients query again).
"""

from roost.storage import account_data, sieve
from roost.storage.errors import Conflict, InvalidName, QuotaExceeded
from roost.storage.sieve import scripts, vacation
from roost.storage.store import parse_oid

from .core import (MethodError, apply_patch, bool_arg, capability, changes_response,
                   check_set_args, ids_arg, invalid, method, properties_arg, put, set_error,
                   set_response, uint_arg)

SIEVE = "urn:ietf:params:jmap:sieve"
VACATION = "urn:ietf:params:jmap:vacationresponse"
KIND = scripts.KIND
PROPS = ("id", "name", "blobId", "isActive")
VACATION_PROPS = ("id",) + vacation.FIELDS
CONTENT_TYPE = "application/sieve"
MAX_NAME_OCTETS = 1020        # 255 characters of up to 4 octets
try:    # delivery (storage.sieve.deliver) owns the number the capability announces
    from roost.storage.sieve.deliver import MAX_REDIRECTS
except ImportError:     # a tree without Sieve delivery yet: its planned bound
    MAX_REDIRECTS = 4


def account_capability(_backend=None):
    """The per-account capability, read when the Session is made (the
    interpreter's EXTENSIONS may grow)."""
    return {"maxSizeScriptName": MAX_NAME_OCTETS, "maxSizeScript": sieve.MAX_SCRIPT_SIZE,
            "maxNumberScripts": scripts.MAX_SCRIPTS, "maxNumberRedirects": MAX_REDIRECTS,
            "sieveExtensions": list(sieve.EXTENSIONS), "notificationMethods": ["mailto"],
            "externalLists": None}


capability(SIEVE, {"implementation": "Roost"}, account_capability)


def script_id(pk):
    return f"Z{pk}"


def content_bytes(script):
    return script.content.encode("utf-8", "surrogateescape")


def script_json(script):
    return {"id": script_id(script.id), "name": script.name,
            "blobId": account_data.blob_id_of(content_bytes(script)), "isActive": script.active}


def read_script_blob(store, account_id, blob_id):
    """``bytes`` of the account's script whose content has ``blob_id``, or None."""
    for script in scripts.list_scripts(store, account_id):
        data = content_bytes(script)
        if account_data.blob_id_of(data) == blob_id:
            return data
    return None


# --- SieveScript/get, /changes, /query ---------------------------------------------------

@method("SieveScript/get", SIEVE)
def sieve_get(ctx, args):
    ctx.check_account(args)
    ids = ids_arg(ctx, args)
    props = properties_arg(args, PROPS)
    rows = {script_id(s.id): script_json(s) for s in scripts.list_scripts(ctx.store, ctx.account.id)}
    found, missing = [], []
    for i in (list(rows) if ids is None else ids):
        if i in rows:
            found.append({p: rows[i][p] for p in props} | {"id": i})
        else:
            missing.append(i)
    return {"accountId": ctx.account_id_str, "state": str(ctx.state(KIND)),
            "list": found, "notFound": missing}


@method("SieveScript/changes", SIEVE)
def sieve_changes(ctx, args):
    return changes_response(ctx, args, KIND, script_id)


@method("SieveScript/query", SIEVE)
def sieve_query(ctx, args):
    ctx.check_account(args)
    filt = args.get("filter") or {}
    if not isinstance(filt, dict) or set(filt) - {"name", "isActive"} or \
            ("name" in filt and not isinstance(filt["name"], str)) or \
            ("isActive" in filt and not isinstance(filt["isActive"], bool)):
        raise MethodError("unsupportedFilter", "filter on name (a string) and isActive (a boolean)")
    sort = args.get("sort") or []
    if not isinstance(sort, list) or not all(
            isinstance(c, dict) and c.get("property") in ("name", "isActive")
            and isinstance(c.get("isAscending", True), bool) for c in sort):
        raise MethodError("unsupportedSort", "sort on name or isActive")
    position = uint_arg(args, "position", 0)
    limit = uint_arg(args, "limit", None)
    found = scripts.list_scripts(ctx.store, ctx.account.id)
    if "name" in filt:
        found = [s for s in found if filt["name"].casefold() in s.name.casefold()]
    if "isActive" in filt:
        found = [s for s in found if s.active == filt["isActive"]]
    for crit in reversed(sort):
        key = (lambda s: s.name.casefold()) if crit["property"] == "name" else (lambda s: s.active)
        found.sort(key=key, reverse=not crit.get("isAscending", True))
    ids = [script_id(s.id) for s in found]
    out = ids[position:] if limit is None else ids[position:position + limit]
    resp = {"accountId": ctx.account_id_str, "queryState": str(ctx.state(KIND)),
            "canCalculateChanges": False, "position": position, "ids": out}
    if bool_arg(args, "calculateTotal"):
        resp["total"] = len(ids)
    if limit is not None:
        resp["limit"] = limit
    return resp


# --- SieveScript/validate ---------------------------------------------------------------

def _blob_text(ctx, blob_id):
    """The script text of ``blob_id``; raises ValueError(SetError)."""
    from .blobs import BlobNotFound
    try:
        data = ctx.backend.blob_bytes(ctx.account.id, ctx.resolve_id(blob_id))
    except BlobNotFound:
        raise ValueError(set_error("blobNotFound", f"no blob {blob_id}",
                                   notFound=[str(blob_id)])) from None
    if len(data) > sieve.MAX_SCRIPT_SIZE:
        raise ValueError(set_error("tooLarge", f"a script is at most {sieve.MAX_SCRIPT_SIZE} "
                                               "octets"))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ValueError(set_error("invalidSieve", f"line {line}: a script is UTF-8 text")) \
            from None


def _check(text):
    """``invalidSieve`` SetError for ``text``, or None."""
    if not text:
        return set_error("invalidSieve", "a script has at least one character")
    try:
        sieve.compile(text)
    except sieve.SieveError as exc:
        return set_error("invalidSieve", str(exc))
    return None


@method("SieveScript/validate", SIEVE)
def sieve_validate(ctx, args):
    ctx.check_account(args)
    blob_id = args.get("blobId")
    if not isinstance(blob_id, str):
        raise invalid("blobId is required")
    try:
        error = _check(_blob_text(ctx, blob_id))
    except ValueError as exc:
        if exc.args[0]["type"] == "blobNotFound":
            raise MethodError("invalidArguments", f"no blob {blob_id}") from None
        error = exc.args[0]
    return {"accountId": ctx.account_id_str, "error": error}


# --- SieveScript/set ---------------------------------------------------------------------

class Refused(Exception):
    def __init__(self, error):
        super().__init__(error.get("type"))
        self.error = error


def _store_error(ctx, exc, name=None):
    """The SetError of a store error."""
    if isinstance(exc, sieve.SieveError):
        return set_error("invalidSieve", str(exc))
    if isinstance(exc, QuotaExceeded):
        if "bytes" in str(exc):
            return set_error("tooLarge", str(exc))
        return set_error("overQuota", str(exc))
    if isinstance(exc, InvalidName):
        return set_error("invalidProperties", str(exc), properties=["name"])
    if isinstance(exc, scripts.ScriptActive):
        return set_error("sieveIsActive", "deactivate the script first")
    if isinstance(exc, scripts.ScriptNotFound):
        return set_error("notFound")
    if isinstance(exc, Conflict):
        existing = {s.name: s.id for s in scripts.list_scripts(ctx.store, ctx.account.id)}
        return set_error("alreadyExists", str(exc), existingId=script_id(existing.get(name, 0)))
    raise exc


def _name_of(ctx, value, by_name):
    if value is None:
        n = len(by_name) + 1
        while f"script-{n}" in by_name:
            n += 1
        return f"script-{n}"
    if not isinstance(value, str):
        raise Refused(set_error("invalidProperties", "name is a string", properties=["name"]))
    try:
        name = scripts.check_name(value)
    except InvalidName as exc:
        raise Refused(set_error("invalidProperties", str(exc), properties=["name"])) from None
    if vacation.is_reserved(name):
        raise Refused(set_error("forbidden", f'"{name}" is the VacationResponse script'))
    if name in by_name:
        raise Refused(set_error("alreadyExists", f"a script named {name!r} exists",
                                existingId=script_id(by_name[name].id)))
    return name


def _create(ctx, obj):
    bad = [k for k in obj if k not in ("name", "blobId")]
    if bad:
        raise Refused(set_error("invalidProperties", "name and blobId only (the rest is server-set)",
                                properties=bad))
    if not isinstance(obj.get("blobId"), str):
        raise Refused(set_error("invalidProperties", "blobId is required", properties=["blobId"]))
    by_name = {s.name: s for s in scripts.list_scripts(ctx.store, ctx.account.id)}
    name = _name_of(ctx, obj.get("name"), by_name)
    try:
        text = _blob_text(ctx, obj["blobId"])
    except ValueError as exc:
        raise Refused(exc.args[0]) from None
    error = _check(text)
    if error:
        raise Refused(error)
    try:
        return scripts.put_script(ctx.store, ctx.account.id, name, text)
    except (sieve.SieveError, QuotaExceeded, InvalidName, Conflict) as exc:
        raise Refused(_store_error(ctx, exc, name)) from None


def _update(ctx, script, patch):
    try:
        new = apply_patch(script_json(script), patch)
    except ValueError:
        raise Refused(set_error("invalidPatch")) from None
    bad = [k for k in new if k not in PROPS] + [k for k in ("id", "isActive")
                                                 if new.get(k) != script_json(script)[k]]
    if bad:
        raise Refused(set_error("invalidProperties", "name and blobId may change "
                                "(isActive through onSuccessActivateScript)", properties=bad))
    if vacation.is_reserved(script.name):
        raise Refused(set_error("forbidden", "the VacationResponse script changes only through "
                                             "VacationResponse/set"))
    by_name = {s.name: s for s in scripts.list_scripts(ctx.store, ctx.account.id)
               if s.id != script.id}
    name = _name_of(ctx, new.get("name"), by_name) if new.get("name") != script.name \
        else script.name
    text = None
    if new.get("blobId") != script_json(script)["blobId"]:
        try:
            text = _blob_text(ctx, new.get("blobId"))
        except ValueError as exc:
            raise Refused(exc.args[0]) from None
        error = _check(text)
        if error:
            raise Refused(error)
    try:
        if name != script.name:
            scripts.rename_script(ctx.store, ctx.account.id, script.name, name)
        if text is not None:
            scripts.put_script(ctx.store, ctx.account.id, name, text)
    except (sieve.SieveError, QuotaExceeded, InvalidName, Conflict, scripts.ScriptNotFound) as exc:
        raise Refused(_store_error(ctx, exc, name)) from None


@method("SieveScript/set", SIEVE)
def sieve_set(ctx, args):
    create, update, destroy, old = check_set_args(ctx, args, KIND)
    activate_id = args.get("onSuccessActivateScript")
    deactivate = bool_arg(args, "onSuccessDeactivateScript")
    if activate_id is not None and not isinstance(activate_id, str):
        raise invalid("onSuccessActivateScript is an id")
    acct = ctx.account.id
    resp = set_response(ctx, KIND, old)
    failed = False
    before = {s.id: s.active for s in scripts.list_scripts(ctx.store, acct)}
    for cid, obj in create.items():
        try:
            script = _create(ctx, obj)
        except Refused as exc:
            put(resp, "notCreated", cid, exc.error)
            failed = True
            continue
        ctx.created[cid] = script_id(script.id)
        put(resp, "created", cid, {k: v for k, v in script_json(script).items() if k != "name"}
            | ({"name": script.name} if obj.get("name") is None else {}))
    current = {script_id(s.id): s for s in scripts.list_scripts(ctx.store, acct)}
    for sid, patch in update.items():
        real = ctx.resolve_id(sid)
        try:
            if real not in current:
                raise Refused(set_error("notFound"))
            _update(ctx, current[real], patch)
        except Refused as exc:
            put(resp, "notUpdated", sid, exc.error)
            failed = True
            continue
        put(resp, "updated", sid, None)
    for sid in destroy:
        real = ctx.resolve_id(sid)
        pk = parse_oid("Z", real) if isinstance(real, str) else None
        try:
            if pk is None or real not in current:
                raise Refused(set_error("notFound"))
            if vacation.is_reserved(current[real].name):
                raise Refused(set_error("forbidden", "the VacationResponse script goes only "
                                                     "through VacationResponse/set"))
            scripts.delete_script(ctx.store, acct, script_id=pk)
        except scripts.ScriptActive:
            put(resp, "notDestroyed", sid, set_error("sieveIsActive", "deactivate it first"))
            failed = True
            continue
        except (Refused, scripts.ScriptNotFound) as exc:
            put(resp, "notDestroyed", sid, exc.error if isinstance(exc, Refused)
                else set_error("notFound"))
            failed = True
            continue
        put(resp, "destroyed", sid, None)
    if not failed and (deactivate or activate_id is not None):
        if deactivate:
            scripts.activate(ctx.store, acct, None)
        pk = parse_oid("Z", ctx.resolve_id(activate_id)) if activate_id is not None else None
        if pk is not None:
            try:
                target = scripts.get_script(ctx.store, acct, script_id=pk)
                # compile may have grown stricter since it was stored
                if _check(target.content) is None:
                    scripts.activate(ctx.store, acct, script_id=pk)
            except scripts.ScriptNotFound:
                pass                # RFC 9661: an unknown id is ignored
        created_pk = {v: k for k, v in ctx.created.items()}
        for s in scripts.list_scripts(ctx.store, acct):
            if before.get(s.id, False) != s.active:
                cid = created_pk.get(script_id(s.id))
                if cid is not None and resp["created"] and cid in resp["created"]:
                    resp["created"][cid]["isActive"] = s.active
                else:
                    if resp["updated"] is None:
                        resp["updated"] = {}
                    resp["updated"][script_id(s.id)] = {
                        **(resp["updated"].get(script_id(s.id)) or {}), "isActive": s.active}
    resp["newState"] = str(ctx.store.state(acct, KIND))
    return resp


# --- VacationResponse (RFC 8621 section 8) as the generated script ---------------------------

def _vacation_json(ctx):
    return {"id": "singleton", **vacation.get(ctx.store, ctx.account.id)}


@method("VacationResponse/get", VACATION)
def vacation_get(ctx, args):
    ctx.check_account(args)
    ids = ids_arg(ctx, args)
    props = properties_arg(args, VACATION_PROPS)
    found, missing = [], []
    for i in (["singleton"] if ids is None else ids):
        if i == "singleton":
            obj = _vacation_json(ctx)
            found.append({p: obj[p] for p in props} | {"id": i})
        else:
            missing.append(i)
    return {"accountId": ctx.account_id_str, "state": str(ctx.state("VacationResponse")),
            "list": found, "notFound": missing}


def _utc_date(value):
    from . import bodies
    bodies.parse_utc_date(value)


@method("VacationResponse/set", VACATION)
def vacation_set(ctx, args):
    create, update, destroy, old = check_set_args(ctx, args, "VacationResponse")
    resp = set_response(ctx, "VacationResponse", old)
    for cid in create:
        put(resp, "notCreated", cid, set_error("singleton", "there is only the singleton"))
    for vid in destroy:
        put(resp, "notDestroyed", vid, set_error("singleton", "the singleton cannot be destroyed"))
    for vid, patch in update.items():
        if vid != "singleton":
            put(resp, "notUpdated", vid, set_error("notFound"))
            continue
        try:
            new = apply_patch(_vacation_json(ctx), patch)
        except ValueError:
            put(resp, "notUpdated", vid, set_error("invalidPatch"))
            continue
        bad = [k for k in new if k not in VACATION_PROPS or
               (k == "isEnabled" and not isinstance(new[k], bool)) or
               (k in ("subject", "textBody", "htmlBody") and new[k] is not None
                and not isinstance(new[k], str))]
        for k in ("fromDate", "toDate"):
            if new.get(k) is not None:
                try:
                    _utc_date(new[k])
                except (ValueError, TypeError):
                    bad.append(k)
        if bad or new.get("id") != "singleton":
            put(resp, "notUpdated", vid, set_error("invalidProperties", properties=bad or ["id"]))
            continue
        new.pop("id")
        try:
            vacation.save(ctx.store, ctx.account.id, new)
        except QuotaExceeded as exc:
            put(resp, "notUpdated", vid, set_error(
                "tooLarge" if "bytes" in str(exc) else "overQuota", str(exc)))
            continue
        except sieve.SieveError as exc:
            put(resp, "notUpdated", vid, set_error("invalidProperties", str(exc)))
            continue
        put(resp, "updated", vid, None)
    resp["newState"] = str(ctx.store.state(ctx.account.id, "VacationResponse"))
    return resp
