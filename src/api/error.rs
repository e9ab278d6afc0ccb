//! The one error of the REST handlers: DRP's error shape, [`ApiError`], with a conversion from
//! each area's error so a handler can use `?`, and [`About`] to name the object it concerns.

pub(crate) use crate::wire::http::ApiError;

use crate::auth::AuthError;
use crate::core::history::HistoryError;
use crate::objects::ObjectError;
use crate::sequencer::PublishError;
use crate::store::StoreError;
use crate::wire::event::EventError;
use crate::wire::filter::FilterError;

/// Each area's error keeps its own status (`AuthError::status`): 403 for a missing claim, 404,
/// 409, 422, 500 for the store.
impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> ApiError {
        ApiError::new(error.status(), error.to_string())
    }
}

impl From<ObjectError> for ApiError {
    fn from(error: ObjectError) -> ApiError {
        ApiError::new(error.status(), error.to_string())
    }
}

/// A request body that is not JSON.
impl From<serde_json::Error> for ApiError {
    fn from(error: serde_json::Error) -> ApiError {
        ApiError::new(400, format!("the body is not valid JSON: {error}"))
    }
}

/// The event log could not sequence a publish or change, or the server is stopping.
impl From<PublishError> for ApiError {
    fn from(error: PublishError) -> ApiError {
        ApiError::new(503, error.to_string())
    }
}

/// The event log could not be read.
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        ApiError::new(500, error.to_string())
    }
}

/// The connection history could not be read.
impl From<HistoryError> for ApiError {
    fn from(error: HistoryError) -> ApiError {
        ApiError::new(500, error.to_string())
    }
}

/// A published body that is not an event or a list of them.
impl From<EventError> for ApiError {
    fn from(error: EventError) -> ApiError {
        ApiError::new(400, error.to_string())
    }
}

/// A `filter` parameter that is not a filter.
impl From<FilterError> for ApiError {
    fn from(error: FilterError) -> ApiError {
        ApiError::new(400, error.to_string())
    }
}

/// Names the object an error concerns (DRP's `Model` and `Key`), as the user, role and object
/// routes answer.
pub(crate) trait About<T> {
    /// The error, converted, with `model` and `key` set.
    fn about(self, model: &str, key: &str) -> Result<T, ApiError>;
}

impl<T, E: Into<ApiError>> About<T> for Result<T, E> {
    fn about(self, model: &str, key: &str) -> Result<T, ApiError> {
        self.map_err(|error| error.into().with_model(model).with_key(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_areas_error_keeps_its_status_and_message() {
        let forbidden = ApiError::from(AuthError::Forbidden {
            principal: "user:bob".into(),
            needed: "users:list:*".into(),
        });
        assert_eq!(forbidden.code, 403);
        assert_eq!(forbidden.kind, "AUTH_ERROR");
        assert_eq!(
            forbidden.messages,
            ["user:bob lacks the claim users:list:*"]
        );
        let missing = ApiError::from(ObjectError::NotFound {
            kind: "profiles",
            key: "p".into(),
        });
        assert_eq!((missing.code, missing.kind.as_str()), (404, "NOT_FOUND"));
        assert_eq!(ApiError::from(PublishError::ShuttingDown).code, 503);
        let json = serde_json::from_slice::<serde_json::Value>(b"{").map_err(ApiError::from);
        assert_eq!(json.map_err(|e| e.code), Err(400));
    }

    #[test]
    fn an_error_about_an_object_names_its_model_and_key() {
        let failed: Result<(), AuthError> = Err(AuthError::NotFound {
            kind: "users",
            name: "bob".into(),
        });
        let error = failed.about("users", "bob").err();
        assert_eq!(
            error.map(|e| (e.code, e.model, e.key)),
            Some((404, "users".to_owned(), "bob".to_owned()))
        );
    }
}
