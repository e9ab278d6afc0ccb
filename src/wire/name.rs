//! The one rule for the names users, roles, profiles and params are stored under, shared by
//! `auth` and `objects` so neither has to import the other for it.

/// The longest name (a user, role, profile or param key), in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Checks a name: non-empty, at most 255 bytes, no `/` and no control characters.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let problem = if name.is_empty() {
        "must not be empty"
    } else if name.len() > MAX_NAME_BYTES {
        "must be at most 255 bytes"
    } else if name.contains('/') {
        "must not contain `/`"
    } else if name.chars().any(char::is_control) {
        "must not contain control characters"
    } else {
        return Ok(());
    };
    Err(format!("{what} {name:?} {problem}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_refuses_slashes_control_characters_emptiness_and_length() {
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        for bad in ["", "a/b", "a\nb", "tab\t", "\u{7f}", long.as_str()] {
            assert!(check_name("user name", bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_name("role name", ""),
            Err("role name \"\" must not be empty".to_owned())
        );
        for good in ["global", "a:b", "with space", "ünïcode", &"x".repeat(255)] {
            assert_eq!(check_name("profile name", good), Ok(()), "{good:?}");
        }
    }
}
