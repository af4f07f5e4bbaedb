//! SCIM 2.0 protocol for Muster (RFC 7643, RFC 7644), with no IO: the schema table Muster
//! serves, the filter grammar, resource validation and projection, PATCH, and the error type.

pub mod error;
pub mod filter;
pub mod patch;
pub mod resource;
pub mod schema;

pub use error::{ScimError, ScimType};
