//! Test certificates: a CA and leaf certificates signed by it (rcgen), written as PEM files
//! in the layouts urbd, libnbd and nbdkit read.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate authority whose certificate is written to `<dir>/<name>.pem`.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate (PEM file).
    pub cert: PathBuf,
}

/// A leaf certificate and its key, as files.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    /// A new CA named `name`; its certificate goes to `<dir>/<name>.pem`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let cert = dir.join(format!("{name}.pem"));
        fs::write(&cert, issuer.pem()).expect("write CA certificate");
        Ca { issuer, cert }
    }

    /// A certificate for `names` (DNS names, or IP addresses), usable as client and server,
    /// written to `<dir>/<file>-cert.pem` and `<dir>/<file>-key.pem`.
    pub fn issue(&self, dir: &Path, file: &str, names: &[&str]) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().expect("a DNS name")),
            })
            .collect();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        let leaf = Leaf {
            cert: dir.join(format!("{file}-cert.pem")),
            key: dir.join(format!("{file}-key.pem")),
        };
        fs::write(&leaf.cert, cert.pem()).expect("write certificate");
        fs::write(&leaf.key, key.serialize_pem()).expect("write key");
        leaf
    }
}

/// The `urbd-options loop { ... }` section for TLS with `leaf` and `ca`.
pub fn urbd_options(leaf: &Leaf, ca: &Path) -> String {
    format!(
        "urbd-options loop {{\n  tls-cert \"{}\";\n  tls-key \"{}\";\n  tls-ca \"{}\";\n}}\n",
        leaf.cert.display(),
        leaf.key.display(),
        ca.display()
    )
}
