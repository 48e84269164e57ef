//! `gatehouse dev-cert`: a self-signed certificate and key for trying TLS and `wss`
//! on one machine. Development only: no browser or client trusts it unless told to
//! (`gatehouse client --ca`, the Python client's `cafile`, or a browser exception).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use rcgen::{CertificateParams, DnType, KeyPair};

/// Printed and written at the top of the certificate file.
const LABEL: &str =
    "gatehouse development certificate: self-signed, for local use only, never for production";

#[derive(Args)]
pub(crate) struct DevCertArgs {
    /// Directory to write `dev-cert.pem` and `dev-key.pem` into.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Names the certificate is valid for (repeatable).
    #[arg(long = "name", default_values = ["localhost", "127.0.0.1", "::1"])]
    names: Vec<String>,
}

pub(crate) fn run(args: DevCertArgs) -> anyhow::Result<()> {
    let (cert_pem, key_pem) = generate(&args.names)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}", args.out.display()))?;
    let cert_path = args.out.join("dev-cert.pem");
    let key_path = args.out.join("dev-key.pem");
    std::fs::write(&cert_path, format!("# {LABEL}\n{cert_pem}"))
        .with_context(|| format!("{}", cert_path.display()))?;
    write_private(&key_path, &key_pem)?;
    println!("{LABEL}");
    println!("certificate: {}", cert_path.display());
    println!("private key: {}", key_path.display());
    println!("for: {}", args.names.join(", "));
    Ok(())
}

/// A fresh key pair and a certificate for `names`, valid from the start of this year
/// for two years: (certificate PEM, key PEM).
pub(crate) fn generate(names: &[String]) -> anyhow::Result<(String, String)> {
    let mut params = CertificateParams::new(names.to_vec()).context("certificate names")?;
    params.distinguished_name.push(DnType::CommonName, LABEL);
    let year = 1970
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() / 31_556_952)
            .unwrap_or(56) as i32;
    params.not_before = rcgen::date_time_ymd(year, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 2, 1, 1);
    let key = KeyPair::generate().context("key generation")?;
    let cert = params.self_signed(&key).context("self-signing")?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes a private key readable by its owner only.
fn write_private(path: &std::path::Path, pem: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("{}", path.display()))?;
    file.write_all(pem.as_bytes())
        .with_context(|| format!("{}", path.display()))
}
