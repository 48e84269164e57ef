//! TLS for the `tls` and `wss` listeners: a certificate chain and key loaded from PEM,
//! served to every handshake through a resolver, so that [`Certificates::reload`]
//! (the binary calls it on `SIGHUP`) swaps them for new handshakes while connections
//! already established go on with theirs. rustls with the ring provider, TLS 1.2 and
//! 1.3 only.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// A certificate that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing of the kind wanted.
    #[error("{what} {path}: {detail}")]
    Pem {
        /// `certificate chain` or `private key`.
        what: &'static str,
        /// The file, or `(memory)`.
        path: String,
        /// Why.
        detail: String,
    },
    /// rustls refused the key or the pair (the key does not match the certificate).
    #[error("certificate and key: {0}")]
    Rustls(#[from] rustls::Error),
    /// [`Certificates::reload`] on certificates that were not loaded from files.
    #[error("these certificates were not loaded from files; nothing to reload")]
    NotFromFiles,
}

/// The certificate a TLS listener serves, replaceable while it runs. Cheap to clone:
/// clones share it.
#[derive(Clone, Debug)]
pub struct Certificates {
    files: Option<(PathBuf, PathBuf)>,
    current: Arc<CurrentKey>,
    config: Arc<ServerConfig>,
}

/// The resolver every handshake asks: always the current pair.
#[derive(Debug)]
struct CurrentKey(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentKey {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.0
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

impl Certificates {
    /// Loads a chain (leaf first) and its key from PEM files; [`Certificates::reload`]
    /// reads the same files again.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Certificates, TlsError> {
        let pair = load_files(cert, key)?;
        Certificates::with(pair, Some((cert.to_owned(), key.to_owned())))
    }

    /// Loads a chain and its key from PEM text (for tests and embedders that keep
    /// certificates elsewhere; replace them with [`Certificates::replace_pem`]).
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Certificates, TlsError> {
        Certificates::with(load_pem(cert, key, "(memory)")?, None)
    }

    fn with(
        pair: CertifiedKey,
        files: Option<(PathBuf, PathBuf)>,
    ) -> Result<Certificates, TlsError> {
        let current = Arc::new(CurrentKey(RwLock::new(Arc::new(pair))));
        let config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        Ok(Certificates {
            files,
            current,
            config: Arc::new(config),
        })
    }

    /// Reads the files again and serves the new pair to every later handshake;
    /// established connections are untouched. On error the old pair stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (cert, key) = self.files.as_ref().ok_or(TlsError::NotFromFiles)?;
        self.install(load_files(cert, key)?);
        Ok(())
    }

    /// Serves a new pair given as PEM text to every later handshake.
    pub fn replace_pem(&self, cert: &[u8], key: &[u8]) -> Result<(), TlsError> {
        self.install(load_pem(cert, key, "(memory)")?);
        Ok(())
    }

    /// The certificate file, if loaded from files.
    pub fn cert_path(&self) -> Option<&Path> {
        self.files.as_ref().map(|(cert, _)| cert.as_path())
    }

    fn install(&self, pair: CertifiedKey) {
        *self
            .current
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(pair);
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }
}

fn load_files(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path, what| {
        std::fs::read(path).map_err(|e| TlsError::Pem {
            what,
            path: path.display().to_string(),
            detail: e.to_string(),
        })
    };
    let cert_pem = read(cert, "certificate chain")?;
    let key_pem = read(key, "private key")?;
    let chain = parse_chain(&cert_pem, &cert.display().to_string())?;
    let key = parse_key(&key_pem, &key.display().to_string())?;
    Ok(CertifiedKey::from_der(chain, key, &provider())?)
}

fn load_pem(cert: &[u8], key: &[u8], path: &str) -> Result<CertifiedKey, TlsError> {
    let chain = parse_chain(cert, path)?;
    let key = parse_key(key, path)?;
    Ok(CertifiedKey::from_der(chain, key, &provider())?)
}

fn parse_chain(pem: &[u8], path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |detail: String| TlsError::Pem {
        what: "certificate chain",
        path: path.to_owned(),
        detail,
    };
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if chain.is_empty() {
        return Err(error("no CERTIFICATE block".into()));
    }
    Ok(chain)
}

fn parse_key(pem: &[u8], path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem {
        what: "private key",
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (cert, _) = self_signed("a.test");
        let (_, other_key) = self_signed("b.test");
        let e = Certificates::from_pem(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
        assert!(matches!(e, TlsError::Rustls(_)), "{e}");
    }

    #[test]
    fn pem_without_a_certificate_is_named() {
        let (_, key) = self_signed("a.test");
        let e = Certificates::from_pem(key.as_bytes(), key.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("no CERTIFICATE block"), "{e}");
    }

    #[test]
    fn a_failed_reload_keeps_the_old_pair() {
        let dir = std::env::temp_dir().join(format!("gatehouse-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = self_signed("a.test");
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, &cert).unwrap();
        std::fs::write(&key_path, &key).unwrap();
        let certs = Certificates::from_files(&cert_path, &key_path).unwrap();
        let before = certs.current.0.read().unwrap().clone();
        std::fs::write(&cert_path, "garbage").unwrap();
        assert!(certs.reload().is_err());
        assert!(Arc::ptr_eq(&before, &certs.current.0.read().unwrap()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
