//! The DRP-shaped object store (`docs/protocol.md` §7): profiles, params, machines, clusters and
//! resource brokers kept in sled, and the event every change emits. Their REST routes are in
//! `crate::api::objects`, above this domain code, which knows nothing of HTTP or the cores.
//!
//! - [`Kind`]: the object types, their trees, key fields and key validation.
//! - [`ObjectStore`]: reads, and writes that each return the event they cause.
//!
//! Users and roles are objects too, but they live in [`crate::auth`], which owns passwords.

mod kind;
pub(crate) mod store;

use thiserror::Error;

pub(crate) use kind::Kind;
pub(crate) use store::{ObjectStore, Written, filter_and_page};

/// Why an object request or change failed; each variant maps to one HTTP status.
#[derive(Debug, Error)]
pub enum ObjectError {
    /// No object of this type has this key (404).
    #[error("{kind} {key:?} does not exist")]
    NotFound {
        /// The object type.
        kind: &'static str,
        /// The key asked for.
        key: String,
    },
    /// The object exists but has no such param (404).
    #[error("{kind} {key:?} has no param {param:?}")]
    NoParam {
        /// The object type.
        kind: &'static str,
        /// The object's key.
        key: String,
        /// The param asked for.
        param: String,
    },
    /// An object with this key already exists (409).
    #[error("{kind} {key:?} already exists; change it with PUT or PATCH")]
    Exists {
        /// The object type.
        kind: &'static str,
        /// The key of the existing object.
        key: String,
    },
    /// Other nodes of the cluster kept writing the object while this write was planned on
    /// it; nothing was changed (409).
    #[error("{0}")]
    Contended(String),
    /// A JSON Patch `test` operation did not hold; nothing was changed (409).
    #[error("the patch was not applied: {0}")]
    TestFailed(String),
    /// The request body is not JSON, or not a JSON Patch where one is needed (400).
    #[error("{0}")]
    BadRequest(String),
    /// The object, its key or one of its fields failed validation (422, as in DRP).
    #[error("{0}")]
    Invalid(String),
    /// The database failed (500).
    #[error("the object store failed: {}", crate::store::sled_reason(.0))]
    Store(sled::Error),
    /// Stored data cannot be read: damaged, or written by a newer herald (500).
    #[error("the object store holds unreadable data: {0}")]
    Corrupt(String),
    /// The change could not be sequenced: the event log failed or the server is stopping (503).
    #[error("{0}")]
    Unavailable(String),
}

impl From<sled::Error> for ObjectError {
    fn from(error: sled::Error) -> ObjectError {
        ObjectError::Store(error)
    }
}

impl ObjectError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            ObjectError::NotFound { .. } | ObjectError::NoParam { .. } => 404,
            ObjectError::Exists { .. } | ObjectError::TestFailed(_) | ObjectError::Contended(_) => {
                409
            }
            ObjectError::BadRequest(_) => 400,
            ObjectError::Invalid(_) => 422,
            ObjectError::Store(_) | ObjectError::Corrupt(_) => 500,
            ObjectError::Unavailable(_) => 503,
        }
    }
}
