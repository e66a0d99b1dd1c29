//! Test PKI made with the openssl CLI: a CA and leaf certificates signed by it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::proc::{find_bin, run_checked};

/// PEM files for a test CA and a server leaf cert valid for 127.0.0.1 and localhost.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// CA certificate (trust this).
    pub ca_cert: PathBuf,
    /// Leaf certificate (serverAuth, CA:FALSE, SAN DNS:localhost, IP:127.0.0.1).
    pub cert: PathBuf,
    /// Leaf private key.
    pub key: PathBuf,
}

/// Generate a CA and a leaf cert in `dir` with the openssl CLI (rustls rejects a self-signed leaf).
pub fn make_tls(dir: &Path) -> TlsFiles {
    issue(
        dir,
        ("ca", "tagflow testbed CA"),
        ("server", "127.0.0.1"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        ("PEM", "server.crt"),
    );
    TlsFiles {
        ca_cert: dir.join("ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    }
}

/// With the openssl CLI in `dir`: a fresh P-256 CA (`<ca>.key`, `<ca>.crt`, subject `ca_cn`)
/// and a leaf key `<leaf>.key` whose certificate (subject `leaf_cn`, extensions `ext`) the CA
/// signs into `out` in `form` (PEM or DER).
fn issue(
    dir: &Path,
    (ca, ca_cn): (&str, &str),
    (leaf, leaf_cn): (&str, &str),
    ext: &str,
    (form, out): (&str, &str),
) {
    let openssl = find_bin("openssl");
    let t = Duration::from_secs(30);
    let p = |name: String| dir.join(name).to_string_lossy().into_owned();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run_checked(
        Command::new(&openssl)
            .args(["req", "-x509"])
            .args(ec)
            .args([
                "-keyout",
                &p(format!("{ca}.key")),
                "-out",
                &p(format!("{ca}.crt")),
            ])
            .args(["-days", "3650", "-subj", &format!("/CN={ca_cn}")])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
        t,
    );
    run_checked(
        Command::new(&openssl)
            .arg("req")
            .args(ec)
            .args([
                "-keyout",
                &p(format!("{leaf}.key")),
                "-out",
                &p(format!("{leaf}.csr")),
            ])
            .args(["-subj", &format!("/CN={leaf_cn}")]),
        t,
    );
    let ext_file = p(format!("{leaf}.ext"));
    fs::write(&ext_file, ext).expect("write the extensions file");
    run_checked(
        Command::new(&openssl)
            .args(["x509", "-req", "-in", &p(format!("{leaf}.csr"))])
            .args([
                "-CA",
                &p(format!("{ca}.crt")),
                "-CAkey",
                &p(format!("{ca}.key")),
            ])
            .args(["-CAcreateserial", "-days", "3650", "-extfile", &ext_file])
            .args(["-outform", form, "-out", &p(out.to_owned())]),
        t,
    );
}

/// Random lowercase hex of `bytes` bytes (time, pid and a counter hashed; good enough for tests).
pub(crate) fn random_hex(bytes: usize) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{:?}{}{}",
        std::time::SystemTime::now(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    let mut out = hex::encode(Sha256::digest(seed.as_bytes()));
    out.truncate(bytes * 2);
    out
}

/// A token-signing key and certificate (CA:FALSE, digitalSignature) signed by a fresh test CA.
#[derive(Debug, Clone)]
pub struct SignerFiles {
    /// CA certificate (PEM): the registry's `rootcertbundle`.
    pub ca_cert: PathBuf,
    /// The signer's P-256 private key, PKCS#8 DER.
    pub key_der: PathBuf,
    /// The signer's certificate, DER (goes into each token's `x5c` header).
    pub cert_der: PathBuf,
}

/// Make a CA and a P-256 signing certificate in `dir` with the openssl CLI.
pub fn make_signer(dir: &Path) -> SignerFiles {
    issue(
        dir,
        ("token-ca", "tagflow testbed token CA"),
        ("signer", "tagflow testbed token signer"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n",
        ("DER", "signer.der"),
    );
    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
    run_checked(
        Command::new(find_bin("openssl")).args([
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            &p("signer.key"),
            "-outform",
            "DER",
            "-out",
            &p("signer.p8"),
        ]),
        Duration::from_secs(30),
    );
    SignerFiles {
        ca_cert: dir.join("token-ca.crt"),
        key_der: dir.join("signer.p8"),
        cert_der: dir.join("signer.der"),
    }
}
