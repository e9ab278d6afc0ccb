//! The object types of the store, what keys them, and how keys are checked.

use super::ObjectError;
use crate::wire::name::{MAX_NAME_BYTES, check_name};

/// An object type kept by [`super::ObjectStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// `profiles`, keyed by `Name`.
    Profiles,
    /// `params` (param definitions), keyed by `Name`.
    Params,
    /// `machines`, keyed by `Uuid`.
    Machines,
    /// `clusters`, keyed by `Uuid`.
    Clusters,
    /// `resource_brokers`, keyed by `Uuid`.
    ResourceBrokers,
}

impl Kind {
    /// Every type, in a fixed order (the order of the store's trees).
    pub(crate) const ALL: [Kind; 5] = [
        Kind::Profiles,
        Kind::Params,
        Kind::Machines,
        Kind::Clusters,
        Kind::ResourceBrokers,
    ];

    /// The type from its route segment and event `Type` (`profiles`, `resource_brokers`).
    pub(crate) fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The type's name in routes, events, claims and sled trees.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Profiles => "profiles",
            Kind::Params => "params",
            Kind::Machines => "machines",
            Kind::Clusters => "clusters",
            Kind::ResourceBrokers => "resource_brokers",
        }
    }

    /// One object of the type, for messages (`profile`, `resource broker`).
    pub(crate) fn singular(self) -> &'static str {
        match self {
            Kind::Profiles => "profile",
            Kind::Params => "param",
            Kind::Machines => "machine",
            Kind::Clusters => "cluster",
            Kind::ResourceBrokers => "resource broker",
        }
    }

    /// Position in [`Kind::ALL`].
    pub(super) fn index(self) -> usize {
        match self {
            Kind::Profiles => 0,
            Kind::Params => 1,
            Kind::Machines => 2,
            Kind::Clusters => 3,
            Kind::ResourceBrokers => 4,
        }
    }

    /// Whether the type is keyed by a UUID and has an agent (a runner) of its own.
    pub(crate) fn is_machine_like(self) -> bool {
        matches!(
            self,
            Kind::Machines | Kind::Clusters | Kind::ResourceBrokers
        )
    }

    /// Whether objects of this type carry `Params` and the `…/params` routes.
    pub(crate) fn has_params(self) -> bool {
        self != Kind::Params
    }

    /// The field that holds the key: `Uuid` for machine-like types, else `Name`.
    pub(crate) fn key_field(self) -> &'static str {
        if self.is_machine_like() {
            "Uuid"
        } else {
            "Name"
        }
    }

    /// Checks a key and returns it in canonical form (UUIDs hyphenated and lowercase), or why
    /// it is not a valid key of this type.
    pub(crate) fn canonical_key(self, key: &str) -> Result<String, String> {
        if self.is_machine_like() {
            uuid::Uuid::try_parse(key)
                .map(|uuid| uuid.hyphenated().to_string())
                .map_err(|_| format!("{} key {key:?} is not a UUID", self.singular()))
        } else {
            check_name(&format!("{} name", self.singular()), key)?;
            Ok(key.to_owned())
        }
    }

    /// The key of a URL path segment, or 404: a key that is not valid cannot name an object.
    pub(crate) fn lookup_key(self, key: &str) -> Result<String, ObjectError> {
        self.canonical_key(key).map_err(|_| ObjectError::NotFound {
            kind: self.name(),
            key: key.to_owned(),
        })
    }
}

/// Checks a param name: like a name, but `/` is allowed (DRP's params are often `area/name`).
pub(super) fn check_param_name(name: &str) -> Result<(), String> {
    let problem = if name.is_empty() {
        "must not be empty"
    } else if name.len() > MAX_NAME_BYTES {
        "must be at most 255 bytes"
    } else if name.chars().any(char::is_control) {
        "must not contain control characters"
    } else {
        return Ok(());
    };
    Err(format!("param name {name:?} {problem}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_through_its_name() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
            assert_eq!(Kind::ALL[kind.index()], kind);
        }
        assert_eq!(Kind::from_name("users"), None);
        assert_eq!(Kind::from_name("Profiles"), None);
    }

    #[test]
    fn names_refuse_slashes_control_characters_emptiness_and_length() {
        let long = "x".repeat(256);
        for bad in ["", "a/b", "a\nb", "tab\t", "\u{7f}", long.as_str()] {
            assert!(Kind::Profiles.canonical_key(bad).is_err(), "{bad:?}");
        }
        for good in [
            "global",
            "a.b",
            "a:b",
            "with space",
            "ünïcode",
            &"x".repeat(255),
        ] {
            assert_eq!(Kind::Profiles.canonical_key(good).as_deref(), Ok(good));
        }
    }

    #[test]
    fn machine_keys_are_uuids_in_canonical_form() {
        let upper = "6E7A3B5C-0D1F-4C2A-9A8B-1F2E3D4C5B6A";
        assert_eq!(
            Kind::Machines.canonical_key(upper).as_deref(),
            Ok("6e7a3b5c-0d1f-4c2a-9a8b-1f2e3d4c5b6a")
        );
        for bad in ["", "global", "6e7a3b5c-0d1f-4c2a-9a8b", "6e7a3b5c/0d1f"] {
            assert!(Kind::Clusters.canonical_key(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            Kind::ResourceBrokers.lookup_key("nope"),
            Err(ObjectError::NotFound { .. })
        ));
    }

    #[test]
    fn param_names_may_hold_slashes_but_not_control_characters() {
        assert!(check_param_name("esxi/boot-options").is_ok());
        assert!(check_param_name("").is_err());
        assert!(check_param_name("a\u{0}b").is_err());
        assert!(check_param_name(&"p".repeat(256)).is_err());
    }
}
