//! Roles and their claims (`scope:actions:specific`, DRP), and the checks made against them.

use serde::{Deserialize, Serialize};

/// The field value that matches anything.
const ANY: &str = "*";

/// One claim of a role: each field is `*` or a comma list of exact, case-sensitive values.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Claim {
    /// Object types the claim covers (`machines`, `profiles,params`, `*`).
    #[serde(
        rename = "Scope",
        default,
        deserialize_with = "crate::auth::null_as_empty"
    )]
    pub scope: String,
    /// Actions the claim allows (`get`, `list,get`, `*`).
    #[serde(
        rename = "Action",
        default,
        deserialize_with = "crate::auth::null_as_empty"
    )]
    pub action: String,
    /// Object keys the claim covers (`global`, `*`).
    #[serde(
        rename = "Specific",
        default,
        deserialize_with = "crate::auth::null_as_empty"
    )]
    pub specific: String,
}

impl Claim {
    /// A claim from its three fields.
    pub(crate) fn new(scope: &str, action: &str, specific: &str) -> Claim {
        Claim {
            scope: scope.to_owned(),
            action: action.to_owned(),
            specific: specific.to_owned(),
        }
    }

    /// The claim that allows everything: `*:*:*`.
    pub(crate) fn superuser() -> Claim {
        Claim::new(ANY, ANY, ANY)
    }

    /// Why this claim is unusable, if it is: every field needs at least one non-empty value.
    pub(crate) fn problem(&self) -> Option<String> {
        for (name, value) in [
            ("Scope", &self.scope),
            ("Action", &self.action),
            ("Specific", &self.specific),
        ] {
            if value.split(',').all(|element| element.trim().is_empty()) {
                return Some(format!(
                    "claim field {name} is empty; use `*` or a comma list of values"
                ));
            }
        }
        None
    }
}

/// A role: a named set of claims (DRP). The role `superuser` is `*:*:*` and always exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Role {
    /// The role's unique name.
    #[serde(
        rename = "Name",
        default,
        deserialize_with = "crate::auth::null_as_empty"
    )]
    pub name: String,
    /// What holders of the role may do and see.
    #[serde(
        rename = "Claims",
        default,
        deserialize_with = "crate::auth::null_as_empty"
    )]
    pub claims: Vec<Claim>,
}

/// One claim field, parsed once: `*` or the trimmed list elements.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Any,
    OneOf(Vec<String>),
}

impl Field {
    fn parse(text: &str) -> Field {
        // The whole field `*` is the wildcard; inside a list `*` is a literal value, as in filters.
        if text.trim() == ANY {
            return Field::Any;
        }
        Field::OneOf(
            text.split(',')
                .map(str::trim)
                .filter(|element| !element.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Field::Any => true,
            Field::OneOf(values) => values.iter().any(|candidate| candidate == value),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ParsedClaim {
    scope: Field,
    action: Field,
    specific: Field,
}

/// The union of an identity's claims, parsed once when it authenticates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Claims {
    claims: Vec<Claim>,
    parsed: Vec<ParsedClaim>,
}

impl Claims {
    /// The union of the given claims; duplicates are kept once.
    pub(crate) fn new(claims: impl IntoIterator<Item = Claim>) -> Claims {
        let mut union = Claims::default();
        for claim in claims {
            if union.claims.contains(&claim) {
                continue;
            }
            union.parsed.push(ParsedClaim {
                scope: Field::parse(&claim.scope),
                action: Field::parse(&claim.action),
                specific: Field::parse(&claim.specific),
            });
            union.claims.push(claim);
        }
        union
    }

    /// The claims as given, for display and for carrying in tokens.
    pub(crate) fn claims(&self) -> &[Claim] {
        &self.claims
    }

    /// Whether these claims hold `*:*:*`.
    pub(crate) fn is_superuser(&self) -> bool {
        self.parsed.iter().any(|claim| {
            claim.scope == Field::Any && claim.action == Field::Any && claim.specific == Field::Any
        })
    }

    /// Whether event `(ty, action, key)` is visible (`docs/protocol.md` §5): a claim covering
    /// the type and key whose actions are `*`, or include `get`, or include the event's action.
    pub(crate) fn may_see(&self, ty: &str, action: &str, key: &str) -> bool {
        self.parsed.iter().any(|claim| {
            claim.scope.matches(ty)
                && claim.specific.matches(key)
                && (claim.action.matches("get") || claim.action.matches(action))
        })
    }

    /// Whether a REST request doing `action` (`list`, `get`, `create`, `update`, `delete`,
    /// `token`, `password`, …) on object `specific` of type `scope` is allowed.
    pub(crate) fn allows(&self, scope: &str, action: &str, specific: &str) -> bool {
        self.parsed.iter().any(|claim| {
            claim.scope.matches(scope)
                && claim.action.matches(action)
                && claim.specific.matches(specific)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of a claims table: (claims, scope or type, action, specific or key, expected).
    type Row<'a> = (
        &'a [(&'a str, &'a str, &'a str)],
        &'a str,
        &'a str,
        &'a str,
        bool,
    );

    fn claims(list: &[(&str, &str, &str)]) -> Claims {
        Claims::new(list.iter().map(|(s, a, k)| Claim::new(s, a, k)))
    }

    #[test]
    fn superuser_sees_and_may_do_everything() {
        let all = claims(&[("*", "*", "*")]);
        assert!(all.is_superuser());
        assert!(all.may_see("machines", "update", "m1"));
        assert!(all.allows("users", "delete", "rocketskates"));
    }

    #[test]
    fn a_list_containing_a_star_is_not_the_superuser() {
        assert!(!claims(&[("*,machines", "*", "*")]).is_superuser());
        assert!(!claims(&[("machines", "*", "*")]).is_superuser());
        assert!(!Claims::default().is_superuser());
    }

    #[test]
    fn event_visibility_follows_scope_specific_and_get_or_action() {
        // (claims, type, action, key, visible)
        let table: &[Row] = &[
            (&[("machines", "*", "*")], "machines", "update", "m1", true),
            (&[("machines", "*", "*")], "profiles", "update", "m1", false),
            (
                &[("machines,profiles", "get", "*")],
                "profiles",
                "save",
                "global",
                true,
            ),
            (
                &[("machines, profiles", "get", "*")],
                "profiles",
                "save",
                "g",
                true,
            ),
            (
                &[("machines", "update", "*")],
                "machines",
                "update",
                "m1",
                true,
            ),
            (
                &[("machines", "update", "*")],
                "machines",
                "delete",
                "m1",
                false,
            ),
            (
                &[("machines", "create,delete", "*")],
                "machines",
                "delete",
                "m1",
                true,
            ),
            (
                &[("machines", "list,get", "*")],
                "machines",
                "delete",
                "m1",
                true,
            ),
            (
                &[("machines", "*", "m1,m2")],
                "machines",
                "delete",
                "m2",
                true,
            ),
            (
                &[("machines", "*", "m1,m2")],
                "machines",
                "delete",
                "m3",
                false,
            ),
            (
                &[("machines", "*", "m1")],
                "machines",
                "delete",
                "M1",
                false,
            ),
            (&[("mach*", "*", "*")], "machines", "create", "m1", false),
            (&[("*,x", "*", "*")], "machines", "create", "m1", false),
            (
                &[("a", "get", "*"), ("machines", "*", "m9")],
                "machines",
                "get",
                "m9",
                true,
            ),
            (&[], "machines", "get", "m1", false),
        ];
        for (list, ty, action, key, visible) in table {
            assert_eq!(
                claims(list).may_see(ty, action, key),
                *visible,
                "{list:?} seeing {ty}.{action}.{key}"
            );
        }
    }

    #[test]
    fn rest_authorization_needs_the_requested_action_itself() {
        let table: &[Row] = &[
            (&[("users", "get", "*")], "users", "get", "bob", true),
            (&[("users", "get", "*")], "users", "delete", "bob", false),
            (
                &[("users", "token,password", "bob")],
                "users",
                "token",
                "bob",
                true,
            ),
            (
                &[("users", "token,password", "bob")],
                "users",
                "password",
                "bob",
                true,
            ),
            (
                &[("users", "token,password", "bob")],
                "users",
                "token",
                "alice",
                false,
            ),
            (&[("users,roles", "*", "*")], "roles", "create", "r", true),
            (&[("users,roles", "*", "*")], "machines", "list", "", false),
            (&[("*", "list", "*")], "machines", "list", "", true),
        ];
        for (list, scope, action, specific, allowed) in table {
            assert_eq!(
                claims(list).allows(scope, action, specific),
                *allowed,
                "{list:?} doing {scope}:{action}:{specific}"
            );
        }
    }

    #[test]
    fn duplicate_claims_are_kept_once() {
        let union = claims(&[("a", "b", "c"), ("a", "b", "c"), ("x", "y", "z")]);
        assert_eq!(union.claims().len(), 2);
    }

    #[test]
    fn claims_serialize_with_drp_field_names() {
        let json = serde_json::to_string(&Claim::new("machines", "get", "*")).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"Scope":"machines","Action":"get","Specific":"*"}"#
        );
    }

    #[test]
    fn a_claim_with_an_empty_field_is_a_problem() {
        assert!(Claim::new("", "*", "*").problem().is_some());
        assert!(Claim::new("a", " , ", "*").problem().is_some());
        assert!(Claim::new("a", "get", "*").problem().is_none());
    }
}
