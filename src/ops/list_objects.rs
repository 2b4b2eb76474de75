//! `ListObjectsV2` as a stream of entries with plaintext sizes (the OSS format's ciphertext is
//! as long as its plaintext) and, on request, each object's envelope (one HEAD per object,
//! several at once), so a listing can say which key every object needs. Integrity sidecars
//! (`KEY.cbtags`) of listed objects are left out (a sidecar sorts after its object; the keys
//! seen so far are remembered to tell).

use futures::{Stream, StreamExt as _, TryStreamExt as _};

use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::handle::SharedHandle;
use crate::integrity::SIDECAR_SUFFIX;
use crate::ops::head_object::HeadObjectFluentBuilder;

/// How many HEADs a listing with envelopes runs at once.
const HEADS_AT_ONCE: usize = 16;

/// Builder of a listing; see [`CryptoBucket::list`](crate::CryptoBucket::list).
#[derive(Debug)]
pub struct ListObjectsFluentBuilder {
    handle: SharedHandle,
    prefix: String,
    recursive: bool,
    envelopes: bool,
}

/// One entry of a listing.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ListEntry {
    /// An object.
    Object(Box<ObjectEntry>),
    /// A "directory": a common prefix ending in `/` (non-recursive listings only).
    Prefix(String),
}

/// An object of a listing.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ObjectEntry {
    /// Object key.
    pub key: String,
    /// Plaintext size (equal to the stored size: AES-CTR adds nothing).
    pub size: u64,
    /// When it was last written, if the store says.
    pub last_modified: Option<std::time::SystemTime>,
    /// ETag.
    pub e_tag: Option<String>,
    /// With [`envelopes`](ListObjectsFluentBuilder::envelopes): `Some(None)` for a plain
    /// object, `Some(Some(envelope))` for an encrypted one; `None` when not asked for.
    pub envelope: Option<Option<Envelope>>,
    /// With envelopes: whether the object carries integrity data.
    pub has_integrity: Option<bool>,
}

impl ListObjectsFluentBuilder {
    pub(crate) fn new(handle: SharedHandle) -> Self {
        Self {
            handle,
            prefix: String::new(),
            recursive: false,
            envelopes: false,
        }
    }

    /// List under this prefix (default: the whole bucket).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Every object under the prefix (default: one level, with `/`-delimited sub-prefixes as
    /// [`ListEntry::Prefix`]).
    pub fn recursive(mut self, recursive: bool) -> Self {
        self.recursive = recursive;
        self
    }

    /// HEAD each object (16 at once, in listing order) for its envelope: which wrap algorithm
    /// and matdesc, so which key, it needs.
    pub fn envelopes(mut self, envelopes: bool) -> Self {
        self.envelopes = envelopes;
        self
    }

    /// The entries, page by page as the store sends them.
    ///
    /// ```no_run
    /// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
    /// use cryptobucket::ListEntry;
    /// use futures::TryStreamExt as _;
    /// let mut entries = std::pin::pin!(bucket.list().prefix("ckpt/").envelopes(true).into_stream());
    /// while let Some(entry) = entries.try_next().await? {
    ///     if let ListEntry::Object(o) = entry {
    ///         println!("{} {} bytes", o.key, o.size);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn into_stream(self) -> impl Stream<Item = Result<ListEntry>> + Send {
        let Self {
            handle,
            prefix,
            recursive,
            envelopes,
        } = self;
        let mut req = handle
            .client
            .list_objects_v2()
            .bucket(&handle.bucket)
            .prefix(&prefix);
        if !recursive {
            req = req.delimiter("/");
        }
        let bucket = handle.bucket.clone();
        let pages = futures::stream::unfold(req.into_paginator().send(), |mut p| async move {
            p.next().await.map(|page| (page, p))
        });
        let mut seen = std::collections::HashSet::new();
        let entries = pages
            .map(move |page| {
                let page = page.map_err(|e| {
                    Error::from_sdk("ListObjectsV2", e).with_object(&bucket, &prefix)
                })?;
                let mut out: Vec<Result<ListEntry>> = page
                    .common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix())
                    .map(|p| Ok(ListEntry::Prefix(p.to_owned())))
                    .collect();
                for o in page.contents() {
                    let Some(key) = o.key() else { continue };
                    if key
                        .strip_suffix(SIDECAR_SUFFIX)
                        .is_some_and(|object| seen.contains(object))
                    {
                        continue;
                    }
                    seen.insert(key.to_owned());
                    out.push(Ok(ListEntry::Object(Box::new(ObjectEntry {
                        key: key.to_owned(),
                        size: o.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                        last_modified: o
                            .last_modified()
                            .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
                        e_tag: o.e_tag().map(str::to_owned),
                        envelope: None,
                        has_integrity: None,
                    }))));
                }
                Ok::<_, Error>(futures::stream::iter(out))
            })
            .try_flatten();
        entries
            .map(move |entry| {
                let handle = handle.clone();
                async move {
                    match entry? {
                        ListEntry::Object(mut o) if envelopes => {
                            let head = HeadObjectFluentBuilder::new(handle)
                                .key(&o.key)
                                .send()
                                .await?;
                            o.has_integrity = Some(head.integrity.is_some());
                            o.envelope = Some(head.envelope);
                            o.size = head.object_size;
                            Ok(ListEntry::Object(o))
                        }
                        other => Ok(other),
                    }
                }
            })
            .buffered(HEADS_AT_ONCE)
    }
}
