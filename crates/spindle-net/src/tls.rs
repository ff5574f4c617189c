//! The client side of TLS: which root certificates an `https://` request, a `wss://` socket or
//! a TCP stream with `tls = true` trusts.
//!
//! By default, the webpki roots (Mozilla's list, built in; not the system's store). A script
//! adds roots of its own with the `caCertificates` option, PEM text: they join the webpki roots,
//! never replace them. The option's value is checked when it is read; its certificates are
//! parsed when a [`Cache`] first meets that exact text.
//!
//! Invariants: the default configuration is built once per process and is the only one used
//! without the option, so extra roots never leak into another call's trust; a [`Cache`] builds
//! one value (a configuration, or a pooled client made from it) per distinct set of PEM texts
//! among the [`CACHE_SIZE`] sets used last, so a loop of calls with the same roots parses them
//! once and shares one connection pool.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use mlua::Value;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::config::{describe, value_integer};

/// The option's name, as scripts write it.
pub(crate) const OPTION: &str = "caCertificates";

/// How many distinct root sets a [`Cache`] keeps; the least recently used goes first.
pub(crate) const CACHE_SIZE: usize = 8;

/// The most PEM text one call may pass, in bytes: several times a whole CA bundle (Mozilla's is
/// about 220 KB), and a bound on what a [`Cache`] holds outside the Lua memory limit.
const MAX_PEM_BYTES: usize = 1024 * 1024;

/// Extra roots as the script gave them: one PEM text per element (a plain string is one). The
/// texts themselves are the cache key, compared byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExtraRoots(Vec<Vec<u8>>);

impl ExtraRoots {
    /// Reads the option's value: a string, or a non-empty array of strings (nil is no option).
    /// The refusal is worded to follow `option 'caCertificates' `.
    pub(crate) fn from_value(value: &Value) -> Result<Option<ExtraRoots>, String> {
        let expected = "must be a PEM string or an array of PEM strings";
        let strings = match value {
            Value::Nil => return Ok(None),
            Value::String(text) => vec![text.clone()],
            Value::Table(table) => {
                let length = table.raw_len();
                for pair in table.pairs::<Value, Value>() {
                    let (key, _) = pair.map_err(|e| e.to_string())?;
                    let index = value_integer(&key).and_then(|n| usize::try_from(n).ok());
                    if !matches!(index, Some(n) if (1..=length).contains(&n)) {
                        return Err(format!(
                            "{expected}, got a table with the key {}",
                            describe(&key)
                        ));
                    }
                }
                // Not sized by `length`: a sparse table's border may be far past its element
                // count, and the loop stops at its first nil.
                let mut strings = Vec::new();
                for index in 1..=length {
                    match table.raw_get::<Value>(index).map_err(|e| e.to_string())? {
                        Value::String(text) => strings.push(text),
                        other => {
                            return Err(format!(
                                "{expected}, got {} at [{index}]",
                                describe(&other)
                            ))
                        }
                    }
                }
                if strings.is_empty() {
                    return Err(format!("{expected}, got an empty table"));
                }
                strings
            }
            other => return Err(format!("{expected}, got {}", describe(other))),
        };
        // Measured before anything is copied out of Lua.
        let size: usize = strings.iter().map(|text| text.as_bytes().len()).sum();
        if size > MAX_PEM_BYTES {
            return Err(format!(
                "is too large: {size} bytes of PEM (at most {MAX_PEM_BYTES})"
            ));
        }
        let texts = strings
            .iter()
            .map(|text| text.as_bytes().to_vec())
            .collect();
        Ok(Some(ExtraRoots(texts)))
    }

    /// Where the element at `index` is, for a message: nothing for a lone string.
    fn place(&self, index: usize) -> String {
        if self.0.len() == 1 {
            String::new()
        } else {
            format!(" at [{}]", index + 1)
        }
    }

    /// The webpki roots and these; the refusal says which text was wrong and how.
    fn root_store(&self) -> Result<RootCertStore, String> {
        let mut roots = mozilla_roots();
        for (index, text) in self.0.iter().enumerate() {
            let place = self.place(index);
            let mut found = 0;
            for certificate in CertificateDer::pem_slice_iter(text) {
                let certificate = certificate
                    .map_err(|e| format!("is not valid PEM{place}: {}", pem_error(&e)))?;
                roots.add(certificate).map_err(|e| {
                    let why = match e {
                        rustls::Error::InvalidCertificate(reason) => format!("{reason:?}"),
                        other => other.to_string(),
                    };
                    format!("has a certificate{place} that cannot be read ({why})")
                })?;
                found += 1;
            }
            if found == 0 {
                return Err(format!(
                    "has no certificate{place} (expected PEM text with \"-----BEGIN CERTIFICATE-----\" blocks)"
                ));
            }
        }
        Ok(roots)
    }
}

/// What a PEM parse error means, in words (the library's own messages print bytes as numbers).
fn pem_error(error: &pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { .. } => "a block has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed".into(),
        pem::Error::Base64Decode(why) => format!("a block is not valid base64 ({why})"),
        other => other.to_string(),
    }
}

fn mozilla_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// rustls's safe defaults on the ring provider, trusting `roots`, no client certificate.
fn client_config(roots: RootCertStore) -> ClientConfig {
    // ring builds with a C compiler alone (aws-lc-rs builds a large C library with cmake);
    // rustls deprecates it only for its lack of post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls's default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The configuration of every connection made without `caCertificates`: the webpki roots
/// alone. Built on first use, once per process.
pub(crate) fn default_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| Arc::new(client_config(mozilla_roots()))))
}

/// What a library built for each root set used lately: a configuration, or a pooled client.
pub(crate) struct Cache<T> {
    /// Most recently used first; at most [`CACHE_SIZE`] entries.
    recent: RefCell<VecDeque<(ExtraRoots, T)>>,
}

impl<T> Default for Cache<T> {
    fn default() -> Self {
        Cache {
            recent: RefCell::new(VecDeque::new()),
        }
    }
}

impl<T: Clone> Cache<T> {
    /// The value for `roots`: the cached one, or `make` of a configuration that trusts the
    /// webpki roots and `roots` (parsed now; a refusal is worded to follow
    /// `option 'caCertificates' `).
    pub(crate) fn get(
        &self,
        roots: &ExtraRoots,
        make: impl FnOnce(ClientConfig) -> T,
    ) -> Result<T, String> {
        {
            let mut recent = self.recent.borrow_mut();
            if let Some(at) = recent.iter().position(|(key, _)| key == roots) {
                let entry = recent.remove(at).expect("the position was just found");
                let value = entry.1.clone();
                recent.push_front(entry);
                return Ok(value);
            }
        }
        let value = make(client_config(roots.root_store()?));
        let mut recent = self.recent.borrow_mut();
        recent.push_front((roots.clone(), value.clone()));
        recent.truncate(CACHE_SIZE);
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCALHOST: &[u8] = include_bytes!("../tests/it/fixtures/localhost.crt");

    fn roots(texts: &[&[u8]]) -> ExtraRoots {
        ExtraRoots(texts.iter().map(|text| text.to_vec()).collect())
    }

    #[test]
    fn extra_roots_join_the_webpki_roots() {
        let store = roots(&[LOCALHOST]).root_store().unwrap();
        assert_eq!(store.len(), webpki_roots::TLS_SERVER_ROOTS.len() + 1);
    }

    #[test]
    fn a_cache_builds_once_per_root_set_and_forgets_the_least_recently_used() {
        let cache = Cache::default();
        let built = std::cell::Cell::new(0);
        let make = |_: ClientConfig| {
            built.set(built.get() + 1);
            built.get()
        };
        let first = roots(&[LOCALHOST]);
        assert_eq!(cache.get(&first, make).unwrap(), 1);
        assert_eq!(cache.get(&first, make).unwrap(), 1);
        // Other texts (the same certificate, then blank lines) are other sets.
        let other = |n: usize| {
            let mut text = LOCALHOST.to_vec();
            text.extend(vec![b'\n'; n + 1]);
            roots(&[&text])
        };
        cache.get(&other(0), make).unwrap();
        // `first` is used again: the next sets push out `other(0)` before it.
        assert_eq!(cache.get(&first, make).unwrap(), 1);
        for n in 1..CACHE_SIZE {
            cache.get(&other(n), make).unwrap();
        }
        assert_eq!(built.get(), CACHE_SIZE + 1);
        assert_eq!(cache.get(&first, make).unwrap(), 1);
        assert_eq!(cache.get(&other(0), make).unwrap(), CACHE_SIZE + 2);
    }
}
