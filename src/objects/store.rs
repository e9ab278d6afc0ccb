//! Objects in sled, their validation, and the event each write causes.
//!
//! On-disk layout (sled trees in the shared database):
//! - `objects/<type>` for each [`Kind`] (`objects/profiles`, `objects/resource_brokers`, …):
//!   key = the object's key in canonical form (UTF-8 `Name`, or the hyphenated lowercase
//!   `Uuid`), value = the object's JSON as served.
//! - `meta`: `objects_schema_version` = u32 big-endian (`store::db::OBJECTS_SCHEMA`).
//!
//! The trees, their names and the schema check belong to [`crate::store::db`].
//!
//! Writes are meant to run on the log thread (inside `Publisher::apply`), which serializes
//! them; reads may run on any blocking thread.

use serde_json::{Map, Value};

use super::ObjectError;
use super::kind::{Kind, check_param_name};
use crate::store::versions::{Base, Verdict, Versions};
use crate::wire::event::{self, Event, SYSTEM_PRINCIPAL};
use crate::wire::name::check_name;

/// The profile that exists from first start and cannot be deleted (DRP).
pub(crate) const GLOBAL_PROFILE: &str = "global";

/// Fields herald maintains on every object; what a client sends for them is replaced.
const BOOKKEEPING: [&str; 4] = ["Validated", "Available", "Errors", "ReadOnly"];

/// A completed write: the event it causes and the answer for the client.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Written {
    /// The event to publish (`create`, `update`, `save` or `delete`).
    pub event: Event,
    /// The REST answer: the object, or for param routes the param's value.
    pub answer: Value,
}

/// The object store: one sled tree per [`Kind`]; cheap to share behind an `Arc`.
///
/// On a cluster node the store is the node's copy of the cluster's objects, written only from
/// the cluster's stream ([`ObjectStore::apply`]): its write methods then plan a write (the
/// event and the answer) without storing it, and the node publishes the event on the
/// object's own subject, on condition that nothing wrote the object since it was read.
pub(crate) struct ObjectStore {
    trees: Vec<sled::Tree>,
    /// A cluster node's: the `Seq` of the event that last wrote each object.
    versions: Option<Versions>,
}

pub(crate) fn encode(object: &Value) -> Vec<u8> {
    // A `Value` always serializes.
    serde_json::to_vec(object).unwrap_or_default()
}

pub(crate) fn decode(kind: Kind, key: &[u8], bytes: &[u8]) -> Result<Value, ObjectError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ObjectError::Corrupt(format!(
            "entry {:?} of tree `objects/{}` is not valid JSON: {e}",
            String::from_utf8_lossy(key),
            kind.name()
        ))
    })
}

impl ObjectStore {
    /// Opens the trees `objects/<type>` and creates the `global` profile if it is missing.
    pub(crate) fn open(db: &sled::Db) -> Result<ObjectStore, ObjectError> {
        use crate::store::db::{OBJECTS_SCHEMA, OpenError};
        let names = Kind::ALL.iter().map(|kind| kind.name());
        let trees = crate::store::db::object_trees(db, names).map_err(|error| match error {
            OpenError::Sled(error) => ObjectError::from(error),
            OpenError::Schema(stored) => ObjectError::Corrupt(format!(
                "objects have schema version {stored:?}, this herald reads version {}; use the herald that wrote them",
                OBJECTS_SCHEMA.version
            )),
        })?;
        let store = ObjectStore {
            trees,
            versions: None,
        };
        store.ensure_global()?;
        Ok(store)
    }

    /// Opens a cluster node's copy of the cluster's objects in `db`, whose writes `versions`
    /// records.
    pub(crate) fn open_copy(db: &sled::Db, versions: Versions) -> Result<ObjectStore, ObjectError> {
        let mut store = ObjectStore::open(db)?;
        store.versions = Some(versions);
        Ok(store)
    }

    /// Whether writes are planned only (a cluster node's copy), not stored.
    fn planning(&self) -> bool {
        self.versions.is_some()
    }

    /// A cluster node's record of the writes its copy holds.
    pub(crate) fn versions(&self) -> Option<&Versions> {
        self.versions.as_ref()
    }

    /// Applies an object event read from the cluster's stream at `seq`, planned on the
    /// object's event `base`: the object becomes the event's `Object`, or is gone after
    /// `delete`, if `base` is still the object's newest event; else the write is refused
    /// (false), on every node alike. An event already applied changes nothing.
    pub(crate) fn apply(
        &self,
        kind: Kind,
        key: &str,
        action: &str,
        object: &Value,
        seq: u64,
        base: Option<Base>,
    ) -> Result<bool, ObjectError> {
        let Some(versions) = &self.versions else {
            return Ok(false);
        };
        match versions.admit(kind.name(), key, seq, base, true)? {
            Verdict::Seen(applied) => return Ok(applied),
            Verdict::Refuse => return Ok(false),
            Verdict::Apply => {}
        }
        let tree = self.tree(kind);
        if action == "delete" {
            tree.remove(key)?;
        } else {
            tree.insert(key.as_bytes(), encode(object))?;
        }
        versions.applied(kind.name(), key, seq)?;
        Ok(true)
    }

    /// Creates the `global` profile when it is missing.
    fn ensure_global(&self) -> Result<(), ObjectError> {
        let profiles = self.tree(Kind::Profiles);
        if !profiles.contains_key(GLOBAL_PROFILE)? {
            let global = serde_json::json!({
                "Name": GLOBAL_PROFILE,
                "Description": "Global profile attached automatically to all machines.",
            });
            let (key, object) = prepare(Kind::Profiles, None, global, None, SYSTEM_PRINCIPAL)?;
            profiles.insert(key.as_bytes(), encode(&object))?;
            profiles.flush()?;
        }
        Ok(())
    }

    fn tree(&self, kind: Kind) -> &sled::Tree {
        // `trees` is built from `Kind::ALL`, so every index is present.
        &self.trees[kind.index()]
    }

    /// One object by canonical key.
    pub(crate) fn get(&self, kind: Kind, key: &str) -> Result<Value, ObjectError> {
        match self.tree(kind).get(key)? {
            Some(bytes) => decode(kind, key.as_bytes(), &bytes),
            None => Err(ObjectError::NotFound {
                kind: kind.name(),
                key: key.to_owned(),
            }),
        }
    }

    /// Whether an object exists.
    pub(crate) fn contains(&self, kind: Kind, key: &str) -> Result<bool, ObjectError> {
        Ok(self.tree(kind).contains_key(key)?)
    }

    /// Every object of a type with its key, in key order.
    pub(crate) fn list(&self, kind: Kind) -> Result<Vec<(String, Value)>, ObjectError> {
        self.tree(kind)
            .iter()
            .map(|entry| {
                let (key, bytes) = entry?;
                let object = decode(kind, &key, &bytes)?;
                Ok((String::from_utf8_lossy(&key).into_owned(), object))
            })
            .collect()
    }

    /// Stores a new object; a machine-like object without a `Uuid` gets a fresh one, and starts
    /// `Runnable` whatever the body says, as in DRP (drpcli always sends `"Runnable":false`).
    pub(crate) fn create(
        &self,
        kind: Kind,
        body: Value,
        principal: &str,
    ) -> Result<Written, ObjectError> {
        let (key, mut object) = prepare(kind, None, body, None, principal)?;
        if let Some(fields) = object.as_object_mut().filter(|_| kind.is_machine_like()) {
            fields.insert("Runnable".into(), Value::Bool(true));
        }
        let tree = self.tree(kind);
        if tree.contains_key(&key)? {
            return Err(ObjectError::Exists {
                kind: kind.name(),
                key,
            });
        }
        if !self.planning() {
            tree.insert(key.as_bytes(), encode(&object))?;
        }
        Ok(Written {
            event: Event::new(kind.name(), "create", &key, principal).with_object(&object),
            answer: object,
        })
    }

    /// Replaces an existing object (PUT); its key cannot change.
    pub(crate) fn replace(
        &self,
        kind: Kind,
        key: &str,
        body: Value,
        principal: &str,
    ) -> Result<Written, ObjectError> {
        let original = self.get(kind, key)?;
        let (_, object) = prepare(kind, Some(key), body, Some(&original), principal)?;
        self.store_update(kind, key, object, original, "update", principal)
    }

    /// Applies an RFC 6902 JSON Patch to an existing object; all or nothing.
    pub(crate) fn patch(
        &self,
        kind: Kind,
        key: &str,
        patch: &[json_patch::PatchOperation],
        principal: &str,
    ) -> Result<Written, ObjectError> {
        let original = self.get(kind, key)?;
        let patched = apply_patch(&original, patch)?;
        let (_, object) = prepare(kind, Some(key), patched, Some(&original), principal)?;
        self.store_update(kind, key, object, original, "update", principal)
    }

    /// Removes an object; the `global` profile cannot be removed.
    pub(crate) fn delete(
        &self,
        kind: Kind,
        key: &str,
        principal: &str,
    ) -> Result<Written, ObjectError> {
        if kind == Kind::Profiles && key == GLOBAL_PROFILE {
            return Err(ObjectError::Invalid(
                "the global profile cannot be deleted; change its params instead".into(),
            ));
        }
        let removed = if self.planning() {
            self.tree(kind).get(key)?
        } else {
            self.tree(kind).remove(key)?
        };
        let Some(bytes) = removed else {
            return Err(ObjectError::NotFound {
                kind: kind.name(),
                key: key.to_owned(),
            });
        };
        let object = decode(kind, key.as_bytes(), &bytes)?;
        Ok(Written {
            event: Event::new(kind.name(), "delete", key, principal).with_object(&object),
            answer: object,
        })
    }

    /// The object's `Params` (an empty map when it has none).
    pub(crate) fn params(&self, kind: Kind, key: &str) -> Result<Value, ObjectError> {
        let object = self.get(kind, key)?;
        Ok(object
            .get("Params")
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new())))
    }

    /// One param's value.
    pub(crate) fn param(&self, kind: Kind, key: &str, param: &str) -> Result<Value, ObjectError> {
        self.params(kind, key)?
            .get(param)
            .cloned()
            .ok_or_else(|| ObjectError::NoParam {
                kind: kind.name(),
                key: key.to_owned(),
                param: param.to_owned(),
            })
    }

    /// Sets one param; the event is `save` with the whole object. Answers the value.
    pub(crate) fn set_param(
        &self,
        kind: Kind,
        key: &str,
        param: &str,
        value: Value,
        principal: &str,
    ) -> Result<Written, ObjectError> {
        check_param_name(param).map_err(ObjectError::Invalid)?;
        let original = self.get(kind, key)?;
        let mut object = original.clone();
        params_of(&mut object)?.insert(param.to_owned(), value.clone());
        let mut written = self.store_update(kind, key, object, original, "save", principal)?;
        written.answer = value;
        Ok(written)
    }

    /// Removes one param; the event is `save` with the whole object. Answers the removed value.
    pub(crate) fn remove_param(
        &self,
        kind: Kind,
        key: &str,
        param: &str,
        principal: &str,
    ) -> Result<Written, ObjectError> {
        let original = self.get(kind, key)?;
        let mut object = original.clone();
        let Some(removed) = params_of(&mut object)?.remove(param) else {
            return Err(ObjectError::NoParam {
                kind: kind.name(),
                key: key.to_owned(),
                param: param.to_owned(),
            });
        };
        let mut written = self.store_update(kind, key, object, original, "save", principal)?;
        written.answer = removed;
        Ok(written)
    }

    fn store_update(
        &self,
        kind: Kind,
        key: &str,
        mut object: Value,
        original: Value,
        action: &str,
        principal: &str,
    ) -> Result<Written, ObjectError> {
        stamp_modified(&mut object, principal);
        if !self.planning() {
            self.tree(kind).insert(key.as_bytes(), encode(&object))?;
        }
        Ok(Written {
            event: Event::new(kind.name(), action, key, principal)
                .with_object(&object)
                .with_original(&original),
            answer: object,
        })
    }
}

/// `patch` applied to a copy of `document`: all operations or none.
pub(crate) fn apply_patch(
    document: &Value,
    patch: &[json_patch::PatchOperation],
) -> Result<Value, ObjectError> {
    let mut patched = document.clone();
    // Working on a copy means a failed operation leaves nothing half applied, and the crate's
    // undo step (which may panic) is never needed.
    json_patch::patch_unsafe(&mut patched, patch).map_err(|e| {
        let what = format!(
            "operation {} at {:?}: {}",
            e.operation,
            e.path.as_str(),
            e.kind
        );
        match e.kind {
            json_patch::PatchErrorKind::TestFailed => ObjectError::TestFailed(what),
            _ => ObjectError::Invalid(format!("the patch cannot be applied: {what}")),
        }
    })?;
    Ok(patched)
}

/// The `Params` map of a stored object, created when missing.
fn params_of(object: &mut Value) -> Result<&mut Map<String, Value>, ObjectError> {
    let Some(fields) = object.as_object_mut() else {
        return Err(ObjectError::Corrupt(
            "a stored object is not a JSON object".into(),
        ));
    };
    match fields
        .entry("Params")
        .or_insert_with(|| Value::Object(Map::new()))
    {
        Value::Object(params) => Ok(params),
        _ => Err(ObjectError::Corrupt(
            "a stored object's Params is not a map".into(),
        )),
    }
}

fn stamp_modified(object: &mut Value, principal: &str) {
    if let Some(fields) = object.as_object_mut() {
        fields.insert("LastModifiedAt".into(), Value::String(event::now_rfc3339()));
        fields.insert("LastModifiedBy".into(), Value::String(principal.to_owned()));
    }
}

/// Validates a body as an object of `kind` and completes it: the key (from the path for an
/// update, generated for a new machine-like object), DRP's defaults, and the fields herald
/// maintains. Answers the canonical key and the object to store.
pub(crate) fn prepare(
    kind: Kind,
    path_key: Option<&str>,
    body: Value,
    previous: Option<&Value>,
    principal: &str,
) -> Result<(String, Value), ObjectError> {
    let invalid = ObjectError::Invalid;
    let Value::Object(mut fields) = body else {
        return Err(invalid(format!(
            "a {} must be a JSON object",
            kind.singular()
        )));
    };
    let key_field = kind.key_field();
    // Go clients send an unset key as `""` (a nil UUID) and an unset list or map as `null`.
    let given_key = fields
        .get(key_field)
        .filter(|key| !(key.is_null() || (kind.is_machine_like() && *key == "")));
    let key = match (given_key, path_key) {
        (None, Some(path_key)) => path_key.to_owned(),
        (None, None) if kind.is_machine_like() => uuid::Uuid::new_v4().hyphenated().to_string(),
        (None, None) => {
            return Err(invalid(format!(
                "a {} needs a {key_field}",
                kind.singular()
            )));
        }
        (Some(Value::String(given)), _) => kind.canonical_key(given).map_err(invalid)?,
        (Some(other), _) => {
            return Err(invalid(format!(
                "{key_field} must be a string, not {other}"
            )));
        }
    };
    if let Some(path_key) = path_key
        && key != path_key
    {
        return Err(invalid(format!(
            "the body's {key_field} {key:?} differs from {path_key:?} in the path; a {} cannot change its key",
            kind.singular()
        )));
    }
    fields.insert(key_field.into(), Value::String(key.clone()));
    if kind.is_machine_like() {
        match fields.get("Name") {
            Some(Value::String(name)) => {
                check_name(&format!("{} name", kind.singular()), name).map_err(invalid)?
            }
            None | Some(Value::Null) => {
                return Err(invalid(format!("a {} needs a Name", kind.singular())));
            }
            Some(other) => return Err(invalid(format!("Name must be a string, not {other}"))),
        }
    }
    if kind.is_machine_like() {
        check_field(&mut fields, "Runnable", FieldShape::Bool)?;
    }
    check_field(&mut fields, "Description", FieldShape::String)?;
    check_field(&mut fields, "Meta", FieldShape::StringMap)?;
    if kind.has_params() {
        check_field(&mut fields, "Params", FieldShape::Map)?;
        check_field(&mut fields, "Profiles", FieldShape::StringList)?;
    } else {
        check_field(&mut fields, "Secure", FieldShape::Bool)?;
    }
    for field in BOOKKEEPING {
        fields.remove(field);
    }
    fields.insert("Validated".into(), Value::Bool(true));
    fields.insert("Available".into(), Value::Bool(true));
    fields.insert("Errors".into(), Value::Array(Vec::new()));
    fields.insert("ReadOnly".into(), Value::Bool(false));
    let now = event::now_rfc3339();
    let created = |field: &str, default: String| {
        previous
            .and_then(|p| p.get(field))
            .cloned()
            .unwrap_or(Value::String(default))
    };
    fields.insert("CreatedAt".into(), created("CreatedAt", now.clone()));
    fields.insert(
        "CreatedBy".into(),
        created("CreatedBy", principal.to_owned()),
    );
    fields.insert("LastModifiedAt".into(), Value::String(now));
    fields.insert("LastModifiedBy".into(), Value::String(principal.to_owned()));
    Ok((key, Value::Object(fields)))
}

/// The JSON shape a well-known field must have.
#[derive(Debug, Clone, Copy)]
enum FieldShape {
    String,
    Bool,
    Map,
    StringMap,
    StringList,
}

/// Checks a well-known field's shape, filling in DRP's default when it is absent or null.
fn check_field(
    fields: &mut Map<String, Value>,
    name: &str,
    shape: FieldShape,
) -> Result<(), ObjectError> {
    let value = fields.get(name).filter(|v| !v.is_null());
    let ok = match (shape, value) {
        (_, None) => {
            let default = match shape {
                FieldShape::String => Value::String(String::new()),
                FieldShape::Bool => Value::Bool(false),
                FieldShape::Map | FieldShape::StringMap => Value::Object(Map::new()),
                FieldShape::StringList => Value::Array(Vec::new()),
            };
            fields.insert(name.to_owned(), default);
            true
        }
        (FieldShape::String, Some(v)) => v.is_string(),
        (FieldShape::Bool, Some(v)) => v.is_boolean(),
        (FieldShape::Map, Some(v)) => v.is_object(),
        (FieldShape::StringMap, Some(v)) => v
            .as_object()
            .is_some_and(|map| map.values().all(Value::is_string)),
        (FieldShape::StringList, Some(v)) => v
            .as_array()
            .is_some_and(|list| list.iter().all(Value::is_string)),
    };
    if ok {
        return Ok(());
    }
    let expected = match shape {
        FieldShape::String => "a string",
        FieldShape::Bool => "true or false",
        FieldShape::Map => "a JSON object",
        FieldShape::StringMap => "a JSON object of strings",
        FieldShape::StringList => "a list of strings",
    };
    Err(ObjectError::Invalid(format!("{name} must be {expected}")))
}

/// Applies a list request's equality filters (`Name=global`: a string field equal to the value,
/// any other field whose JSON text equals it) and then `offset` and `limit`.
pub(crate) fn filter_and_page(
    objects: Vec<Value>,
    filters: &[(String, String)],
    offset: usize,
    limit: Option<usize>,
) -> (usize, Vec<Value>) {
    let matching: Vec<Value> = objects
        .into_iter()
        .filter(|object| {
            filters
                .iter()
                .all(|(field, wanted)| match object.get(field) {
                    Some(Value::String(value)) => value == wanted,
                    Some(other) => serde_json::to_string(other).is_ok_and(|text| text == *wanted),
                    None => false,
                })
        })
        .collect();
    let total = matching.len();
    let page = matching
        .into_iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    (total, page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ALICE: &str = "user:alice";

    fn store() -> ObjectStore {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .unwrap_or_else(|e| panic!("sled: {e}"));
        ObjectStore::open(&db).unwrap_or_else(|e| panic!("open: {e}"))
    }

    fn ok<T>(result: Result<T, ObjectError>) -> T {
        result.unwrap_or_else(|e| panic!("unexpected error: {e}"))
    }

    fn patch(ops: Value) -> Vec<json_patch::PatchOperation> {
        serde_json::from_value::<json_patch::Patch>(ops)
            .unwrap_or_else(|e| panic!("patch: {e}"))
            .0
    }

    fn event_json(event: &Event) -> (Value, Value) {
        let object = serde_json::from_str(&event.object).unwrap_or(Value::Null);
        let original = serde_json::from_str(&event.original).unwrap_or(Value::Null);
        (object, original)
    }

    #[test]
    fn a_number_stored_in_an_object_reads_back_as_the_same_number() {
        // Found by fuzzing: without correctly rounded parsing, these read back one bit off.
        let digits = [
            "555555551555555555555555555555555555555555555555551",
            "2.2250738585072011e-308",
            "0.1000000000000000055511151231257827",
        ];
        for text in digits {
            let object: Value = ok(serde_json::from_str(&format!(
                r#"{{"Params":{{"n":{text}}}}}"#
            ))
            .map_err(|e| ObjectError::Invalid(e.to_string())));
            let exact = text
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                object["Params"]["n"].as_f64(),
                Some(exact),
                "{text} as parsed"
            );
            let read = ok(decode(Kind::Profiles, b"p", &encode(&object)));
            assert_eq!(read, object, "{text} after a store and a read");
        }
    }

    #[test]
    fn the_global_profile_exists_from_the_first_open_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        {
            let db = crate::testing::open_sled(dir.path());
            let store = ok(ObjectStore::open(&db));
            let global = ok(store.get(Kind::Profiles, GLOBAL_PROFILE));
            assert_eq!(global["Params"], json!({}));
            ok(store.set_param(Kind::Profiles, GLOBAL_PROFILE, "kept", json!(1), ALICE));
        }
        let db = crate::testing::open_sled(dir.path());
        let store = ok(ObjectStore::open(&db));
        assert_eq!(
            ok(store.param(Kind::Profiles, GLOBAL_PROFILE, "kept")),
            json!(1)
        );
    }

    #[test]
    fn create_fills_in_defaults_and_emits_create_with_the_object() {
        let store = store();
        let written = ok(store.create(
            Kind::Profiles,
            json!({"Name": "p1", "Params": {"a": 1}}),
            ALICE,
        ));
        assert_eq!(written.event.ty, "profiles");
        assert_eq!(written.event.action, "create");
        assert_eq!(written.event.key, "p1");
        assert_eq!(written.event.principal, ALICE);
        let (object, original) = event_json(&written.event);
        assert_eq!(object, written.answer);
        assert_eq!(original, Value::Null);
        for (field, value) in [
            ("Profiles", json!([])),
            ("Meta", json!({})),
            ("Available", json!(true)),
            ("Errors", json!([])),
            ("CreatedBy", json!(ALICE)),
        ] {
            assert_eq!(object[field], value, "{field}");
        }
        assert_eq!(ok(store.get(Kind::Profiles, "p1")), object);
    }

    #[test]
    fn a_duplicate_create_is_refused_and_changes_nothing() {
        let store = store();
        ok(store.create(
            Kind::Params,
            json!({"Name": "p", "Description": "first"}),
            ALICE,
        ));
        let again = store.create(
            Kind::Params,
            json!({"Name": "p", "Description": "second"}),
            ALICE,
        );
        assert!(matches!(again, Err(ObjectError::Exists { .. })));
        assert_eq!(ok(store.get(Kind::Params, "p"))["Description"], "first");
    }

    #[test]
    fn machines_get_a_uuid_when_created_without_one_and_need_a_name() {
        let store = store();
        let written = ok(store.create(Kind::Machines, json!({"Name": "m1"}), ALICE));
        let uuid = written.answer["Uuid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(uuid::Uuid::try_parse(&uuid).is_ok(), "{uuid}");
        assert_eq!(written.event.key, uuid);
        let nameless = store.create(
            Kind::Machines,
            json!({"Uuid": uuid::Uuid::new_v4().to_string()}),
            ALICE,
        );
        assert!(matches!(nameless, Err(ObjectError::Invalid(_))));
        let upper = "6E7A3B5C-0D1F-4C2A-9A8B-1F2E3D4C5B6A";
        let written = ok(store.create(Kind::Clusters, json!({"Uuid": upper, "Name": "c"}), ALICE));
        assert_eq!(written.event.key, upper.to_lowercase());
    }

    #[test]
    fn an_empty_uuid_is_chosen_by_the_store_and_new_machines_start_runnable() {
        let store = store();
        for kind in [Kind::Machines, Kind::Clusters, Kind::ResourceBrokers] {
            let body = json!({"Name": "m", "Uuid": "", "Runnable": false, "Profiles": null});
            let written = ok(store.create(kind, body, ALICE));
            let uuid = written.answer["Uuid"].as_str().unwrap_or_default();
            assert!(uuid::Uuid::try_parse(uuid).is_ok(), "{kind:?}: {uuid:?}");
            assert_eq!(written.answer["Runnable"], true, "{kind:?}");
            assert_eq!(written.answer["Profiles"], json!([]), "{kind:?}");
            let key = written.event.key.clone();
            let stopped = json!({"Name": "m", "Uuid": "", "Runnable": false});
            let replaced = ok(store.replace(kind, &key, stopped, ALICE));
            assert_eq!(replaced.answer["Uuid"], key.as_str(), "{kind:?}");
            assert_eq!(replaced.answer["Runnable"], false, "{kind:?}");
        }
        let nameless = store.create(Kind::Profiles, json!({"Name": ""}), ALICE);
        assert!(matches!(nameless, Err(ObjectError::Invalid(_))));
    }

    #[test]
    fn invalid_objects_and_fields_are_validation_errors() {
        let store = store();
        for body in [
            json!([]),
            json!("profile"),
            json!({}),
            json!({"Name": ""}),
            json!({"Name": "a/b"}),
            json!({"Name": 7}),
            json!({"Name": "p", "Params": []}),
            json!({"Name": "p", "Profiles": [1]}),
            json!({"Name": "p", "Meta": {"a": 1}}),
            json!({"Name": "p", "Description": false}),
        ] {
            let result = store.create(Kind::Profiles, body.clone(), ALICE);
            assert!(matches!(result, Err(ObjectError::Invalid(_))), "{body}");
        }
        let bad_uuid = store.create(
            Kind::Machines,
            json!({"Uuid": "not-a-uuid", "Name": "m"}),
            ALICE,
        );
        assert!(matches!(bad_uuid, Err(ObjectError::Invalid(_))));
        let bad_secure = store.create(Kind::Params, json!({"Name": "p", "Secure": "yes"}), ALICE);
        assert!(matches!(bad_secure, Err(ObjectError::Invalid(_))));
    }

    #[test]
    fn replace_keeps_the_key_and_creation_fields_and_emits_update_with_the_original() {
        let store = store();
        let created = ok(store.create(
            Kind::Profiles,
            json!({"Name": "p", "Description": "old"}),
            ALICE,
        ))
        .answer;
        let written = ok(store.replace(
            Kind::Profiles,
            "p",
            json!({"Description": "new"}),
            "user:bob",
        ));
        assert_eq!(written.event.action, "update");
        let (object, original) = event_json(&written.event);
        assert_eq!(original, created);
        assert_eq!(object["Description"], "new");
        assert_eq!(object["Name"], "p");
        assert_eq!(object["CreatedBy"], ALICE);
        assert_eq!(object["LastModifiedBy"], "user:bob");
        let renamed = store.replace(Kind::Profiles, "p", json!({"Name": "q"}), ALICE);
        assert!(matches!(renamed, Err(ObjectError::Invalid(_))));
        let missing = store.replace(Kind::Profiles, "nope", json!({}), ALICE);
        assert!(matches!(missing, Err(ObjectError::NotFound { .. })));
    }

    #[test]
    fn a_json_patch_applies_all_its_operations_or_none() {
        let store = store();
        ok(store.create(
            Kind::Profiles,
            json!({"Name": "p", "Params": {"a": 1}}),
            ALICE,
        ));
        let written = ok(store.patch(
            Kind::Profiles,
            "p",
            &patch(json!([
                {"op": "test", "path": "/Params/a", "value": 1},
                {"op": "add", "path": "/Params/b", "value": "two"},
                {"op": "remove", "path": "/Params/a"},
            ])),
            ALICE,
        ));
        assert_eq!(written.event.action, "update");
        assert_eq!(written.answer["Params"], json!({"b": "two"}));
        let (_, original) = event_json(&written.event);
        assert_eq!(original["Params"], json!({"a": 1}));

        let before = ok(store.get(Kind::Profiles, "p"));
        let failed_test = store.patch(
            Kind::Profiles,
            "p",
            &patch(json!([
                {"op": "add", "path": "/Params/c", "value": 3},
                {"op": "test", "path": "/Params/b", "value": "not two"},
            ])),
            ALICE,
        );
        assert!(matches!(failed_test, Err(ObjectError::TestFailed(_))));
        let bad_path = store.patch(
            Kind::Profiles,
            "p",
            &patch(json!([{"op": "remove", "path": "/Params/absent"}])),
            ALICE,
        );
        assert!(matches!(bad_path, Err(ObjectError::Invalid(_))));
        let breaks_shape = store.patch(
            Kind::Profiles,
            "p",
            &patch(json!([{"op": "replace", "path": "/Params", "value": 5}])),
            ALICE,
        );
        assert!(matches!(breaks_shape, Err(ObjectError::Invalid(_))));
        let renames = store.patch(
            Kind::Profiles,
            "p",
            &patch(json!([{"op": "replace", "path": "/Name", "value": "q"}])),
            ALICE,
        );
        assert!(matches!(renames, Err(ObjectError::Invalid(_))));
        assert_eq!(ok(store.get(Kind::Profiles, "p")), before);
    }

    #[test]
    fn params_set_and_remove_emit_save_with_the_whole_object_and_the_original() {
        let store = store();
        let set = ok(store.set_param(Kind::Profiles, GLOBAL_PROFILE, "bar", json!("blatz"), ALICE));
        assert_eq!(
            (set.event.ty.as_str(), set.event.action.as_str()),
            ("profiles", "save")
        );
        assert_eq!(set.answer, json!("blatz"));
        let (object, original) = event_json(&set.event);
        assert_eq!(object["Params"]["bar"], "blatz");
        assert!(original["Params"].get("bar").is_none());
        assert_eq!(
            ok(store.params(Kind::Profiles, GLOBAL_PROFILE)),
            json!({"bar": "blatz"})
        );

        let removed = ok(store.remove_param(Kind::Profiles, GLOBAL_PROFILE, "bar", ALICE));
        assert_eq!(removed.answer, json!("blatz"));
        let (object, original) = event_json(&removed.event);
        assert!(object["Params"].get("bar").is_none());
        assert_eq!(original["Params"]["bar"], "blatz");
        assert!(matches!(
            store.remove_param(Kind::Profiles, GLOBAL_PROFILE, "bar", ALICE),
            Err(ObjectError::NoParam { .. })
        ));
        assert!(matches!(
            store.param(Kind::Profiles, GLOBAL_PROFILE, "bar"),
            Err(ObjectError::NoParam { .. })
        ));
        assert!(matches!(
            store.set_param(Kind::Profiles, "nope", "bar", json!(1), ALICE),
            Err(ObjectError::NotFound { .. })
        ));
    }

    #[test]
    fn delete_answers_the_removed_object_and_the_global_profile_stays() {
        let store = store();
        let created = ok(store.create(Kind::Params, json!({"Name": "p"}), ALICE)).answer;
        let deleted = ok(store.delete(Kind::Params, "p", ALICE));
        assert_eq!(deleted.answer, created);
        assert_eq!(deleted.event.action, "delete");
        assert!(matches!(
            store.get(Kind::Params, "p"),
            Err(ObjectError::NotFound { .. })
        ));
        assert!(matches!(
            store.delete(Kind::Params, "p", ALICE),
            Err(ObjectError::NotFound { .. })
        ));
        assert!(matches!(
            store.delete(Kind::Profiles, GLOBAL_PROFILE, ALICE),
            Err(ObjectError::Invalid(_))
        ));
    }

    #[test]
    fn list_filters_compare_strings_and_json_text_then_page() {
        let objects = vec![
            json!({"Name": "a", "Secure": true, "Rank": 1}),
            json!({"Name": "b", "Secure": false, "Rank": 2}),
            json!({"Name": "c", "Secure": true, "Rank": 3}),
        ];
        let names = |page: Vec<Value>| -> Vec<String> {
            page.iter()
                .map(|o| o["Name"].as_str().unwrap_or_default().to_owned())
                .collect()
        };
        let filter = |field: &str, value: &str| vec![(field.to_owned(), value.to_owned())];
        let (total, page) = filter_and_page(objects.clone(), &filter("Secure", "true"), 0, None);
        assert_eq!(
            (total, names(page)),
            (2, vec!["a".to_owned(), "c".to_owned()])
        );
        let (_, page) = filter_and_page(objects.clone(), &filter("Name", "b"), 0, None);
        assert_eq!(names(page), vec!["b".to_owned()]);
        let (_, page) = filter_and_page(objects.clone(), &filter("Rank", "3"), 0, None);
        assert_eq!(names(page), vec!["c".to_owned()]);
        let (_, page) = filter_and_page(objects.clone(), &filter("Missing", "x"), 0, None);
        assert!(page.is_empty());
        let (total, page) = filter_and_page(objects, &[], 1, Some(1));
        assert_eq!((total, names(page)), (3, vec!["b".to_owned()]));
    }
}
