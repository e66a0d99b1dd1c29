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
    let openssl = find_bin("openssl");
    let t = Duration::from_secs(30);
    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
    run_checked(
        Command::new(&openssl).args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.crt"),
            "-days",
            "3650",
            "-subj",
            "/CN=tagflow testbed CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]),
        t,
    );
    run_checked(
        Command::new(&openssl).args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &p("server.key"),
            "-out",
            &p("server.csr"),
            "-subj",
            "/CN=127.0.0.1",
        ]),
        t,
    );
    fs::write(
        dir.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("write server.ext");
    run_checked(
        Command::new(&openssl).args([
            "x509",
            "-req",
            "-in",
            &p("server.csr"),
            "-CA",
            &p("ca.crt"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-out",
            &p("server.crt"),
            "-days",
            "3650",
            "-extfile",
            &p("server.ext"),
        ]),
        t,
    );
    TlsFiles {
        ca_cert: dir.join("ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    }
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
    let openssl = find_bin("openssl");
    let t = Duration::from_secs(30);
    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
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
            .args(["-keyout", &p("token-ca.key"), "-out", &p("token-ca.crt")])
            .args(["-days", "3650", "-subj", "/CN=tagflow testbed token CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
        t,
    );
    run_checked(
        Command::new(&openssl)
            .arg("req")
            .args(ec)
            .args(["-keyout", &p("signer.key"), "-out", &p("signer.csr")])
            .args(["-subj", "/CN=tagflow testbed token signer"]),
        t,
    );
    fs::write(
        dir.join("signer.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n",
    )
    .expect("write signer.ext");
    run_checked(
        Command::new(&openssl).args([
            "x509",
            "-req",
            "-in",
            &p("signer.csr"),
            "-CA",
            &p("token-ca.crt"),
            "-CAkey",
            &p("token-ca.key"),
            "-CAcreateserial",
            "-days",
            "3650",
            "-extfile",
            &p("signer.ext"),
            "-outform",
            "DER",
            "-out",
            &p("signer.der"),
        ]),
        t,
    );
    run_checked(
        Command::new(&openssl).args([
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
        t,
    );
    SignerFiles {
        ca_cert: dir.join("token-ca.crt"),
        key_der: dir.join("signer.p8"),
        cert_der: dir.join("signer.der"),
    }
}
