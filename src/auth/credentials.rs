//! Reading credentials from a request: the `Authorization` header, else the `token` parameter (DRP).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::AuthError;

/// What a request presented to prove who it is.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Credentials {
    /// A user name and password (`Basic`, or a `token` parameter containing `:`).
    Basic {
        /// The user name.
        user: String,
        /// The password in clear; never logged (see the `Debug` impl).
        password: String,
    },
    /// A signed token (`Bearer`, or a `token` parameter without `:`).
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    // Passwords and tokens must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { user, .. } => f
                .debug_struct("Basic")
                .field("user", user)
                .finish_non_exhaustive(),
            Credentials::Bearer(_) => f.write_str("Bearer(..)"),
        }
    }
}

/// The credentials of a request, from its `Authorization` header value (schemes `Basic` and
/// `Bearer`, case-sensitive), else from its `token` (or `Token`) query parameter, already
/// percent-decoded: a value containing `:` is `user:password`, else a bearer token.
///
/// An empty header counts as absent, as in DRP. No credentials → [`AuthError::Missing`]; an
/// unknown scheme, or Basic that is not base64 or has no `:` → [`AuthError::Malformed`] (both 401).
pub(crate) fn credentials(
    authorization: Option<&[u8]>,
    token_param: Option<&str>,
) -> Result<Credentials, AuthError> {
    let header = authorization
        .map(<[u8]>::trim_ascii)
        .filter(|value| !value.is_empty());
    if let Some(value) = header {
        return from_header(value);
    }
    match token_param.filter(|value| !value.is_empty()) {
        None => Err(AuthError::Missing),
        Some(value) => Ok(match value.split_once(':') {
            Some((user, password)) => Credentials::Basic {
                user: user.to_owned(),
                password: password.to_owned(),
            },
            None => Credentials::Bearer(value.to_owned()),
        }),
    }
}

fn from_header(value: &[u8]) -> Result<Credentials, AuthError> {
    let value = std::str::from_utf8(value)
        .map_err(|_| AuthError::Malformed("the Authorization header is not UTF-8".into()))?;
    let Some((scheme, rest)) = value.split_once(' ') else {
        return Err(AuthError::Malformed(
            "the Authorization header needs a scheme and a value, as `Basic …` or `Bearer …`"
                .into(),
        ));
    };
    let rest = rest.trim();
    match scheme {
        "Basic" => {
            let decoded = STANDARD.decode(rest).map_err(|_| {
                AuthError::Malformed("Basic credentials are not valid base64".into())
            })?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| AuthError::Malformed("Basic credentials are not UTF-8".into()))?;
            let Some((user, password)) = decoded.split_once(':') else {
                return Err(AuthError::Malformed(
                    "Basic credentials need the form user:password".into(),
                ));
            };
            Ok(Credentials::Basic {
                user: user.to_owned(),
                password: password.to_owned(),
            })
        }
        "Bearer" if rest.is_empty() => {
            Err(AuthError::Malformed("the Bearer token is empty".into()))
        }
        "Bearer" => Ok(Credentials::Bearer(rest.to_owned())),
        _ => Err(AuthError::Malformed(
            "unknown Authorization scheme; use `Basic` or `Bearer` (case-sensitive)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (Authorization header, token parameter, credentials or the error's status).
    type Row<'a> = (Option<&'a str>, Option<&'a str>, Result<Credentials, u16>);

    fn basic(user: &str, password: &str) -> Credentials {
        Credentials::Basic {
            user: user.into(),
            password: password.into(),
        }
    }

    fn header(user_password: &str) -> String {
        format!("Basic {}", STANDARD.encode(user_password))
    }

    #[test]
    fn credentials_are_read_from_the_header_then_the_token_parameter() {
        let good_basic = header("rocketskates:r0cketsk8ts");
        let colon_in_password = header("bob:a:b");
        let table: &[Row] = &[
            (
                Some(&good_basic),
                None,
                Ok(basic("rocketskates", "r0cketsk8ts")),
            ),
            (Some(&colon_in_password), None, Ok(basic("bob", "a:b"))),
            (
                Some("Bearer abc.def"),
                None,
                Ok(Credentials::Bearer("abc.def".into())),
            ),
            (
                Some("  Bearer abc.def  "),
                None,
                Ok(Credentials::Bearer("abc.def".into())),
            ),
            // The header wins over the parameter.
            (
                Some("Bearer abc"),
                Some("u:p"),
                Ok(Credentials::Bearer("abc".into())),
            ),
            (None, Some("u:p:q"), Ok(basic("u", "p:q"))),
            (
                None,
                Some("abc.def"),
                Ok(Credentials::Bearer("abc.def".into())),
            ),
            (Some(""), Some("abc"), Ok(Credentials::Bearer("abc".into()))),
            (None, None, Err(401)),
            (None, Some(""), Err(401)),
            (Some("   "), None, Err(401)),
            (Some("bearer abc"), None, Err(401)),
            (Some("basic abc"), None, Err(401)),
            (Some("Digest abc"), None, Err(401)),
            (Some("Bearer"), None, Err(401)),
            (Some("Bearer   "), None, Err(401)),
            (Some("Basic !!!notbase64"), None, Err(401)),
            (Some(&header("no-colon")), None, Err(401)),
        ];
        for (auth, param, expected) in table {
            let got = credentials(auth.map(str::as_bytes), *param).map_err(|e| e.status());
            assert_eq!(&got, expected, "header {auth:?}, token {param:?}");
        }
    }

    #[test]
    fn no_credentials_is_missing_and_a_bad_header_is_malformed() {
        assert!(matches!(credentials(None, None), Err(AuthError::Missing)));
        assert!(matches!(
            credentials(Some(b"Negotiate x"), None),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            credentials(Some(b"Bearer \xff\xfe"), None),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn debug_output_hides_passwords_and_tokens() {
        let shown = format!(
            "{:?} {:?}",
            basic("bob", "hunter2"),
            Credentials::Bearer("sekrit".into())
        );
        assert!(
            !shown.contains("hunter2") && !shown.contains("sekrit"),
            "{shown}"
        );
    }
}
