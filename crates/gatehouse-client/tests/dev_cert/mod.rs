//! A self-signed certificate for `localhost`, for the tests' TLS listeners, and a
//! file of it (`ca.pem` in the returned directory) for their clients to trust.

use gatehouse::Certificates;

use crate::support::Scratch;

/// The listeners' certificates, and the directory holding `ca.pem`.
pub(crate) fn localhost(name: &str) -> (Certificates, Scratch) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let certs = Certificates::from_pem(
        cert.cert.pem().as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    let ca = Scratch::new(name);
    std::fs::create_dir_all(ca.path()).unwrap();
    std::fs::write(ca.path().join("ca.pem"), cert.cert.pem()).unwrap();
    (certs, ca)
}
