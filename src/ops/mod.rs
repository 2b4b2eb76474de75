//! One file per S3 operation of [`CryptoBucket`](crate::CryptoBucket): each builder holds the
//! shared [`handle`](crate::handle) and nothing else, so operations call each other without
//! going through `bucket.rs`.

pub(crate) mod copy_object;
pub(crate) mod delete_object;
pub(crate) mod get_object;
pub(crate) mod head_object;
pub(crate) mod list_objects;
pub(crate) mod put_object;
pub(crate) mod put_stored;
pub(crate) mod sidecar;
