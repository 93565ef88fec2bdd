//! TLS of the public listeners (`--tls-cert`, `--tls-key`, `--tls-client-ca`):
//! the PEM files are read and checked once at start, with errors that name the
//! flag and the file, then handed to actix-web (HTTP, the logs app) and tonic
//! (gRPC) in the form each takes. Both use rustls with the ring provider, the
//! one already in the tree. Client certificates are asked for on gRPC only:
//! the HTTP route and the logs page serve browsers and load generators.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::TlsArgs;

/// A checked server identity, and the client CA when client certificates are required on gRPC.
#[derive(Clone)]
pub struct ServerTls {
    http: rustls::ServerConfig,
    grpc: ServerTlsConfig,
}

impl ServerTls {
    /// `None` without `--tls-cert`: the listeners speak plain text.
    pub fn from_args(args: &TlsArgs, client_ca: Option<&Path>) -> anyhow::Result<Option<ServerTls>> {
        match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => ServerTls::load(cert, key, client_ca).map(Some),
            (None, None) if client_ca.is_none() => Ok(None),
            _ => anyhow::bail!("TLS needs both --tls-cert and --tls-key (and --tls-client-ca needs them too)"),
        }
    }

    /// Reads and checks the files: a certificate chain, its private key (the
    /// two must match), and the client CA's certificates.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> anyhow::Result<ServerTls> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (cert_pem, chain) = certificates("--tls-cert", cert)?;
        let key_pem = read("--tls-key", key)?;
        let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            anyhow::anyhow!(
                "--tls-key {}: no private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}",
                key.display()
            )
        })?;
        let http = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("rustls protocol versions")?
            .with_no_client_auth()
            .with_single_cert(chain, private_key)
            .with_context(|| {
                format!(
                    "--tls-key {} does not go with the certificate in --tls-cert {}",
                    key.display(),
                    cert.display()
                )
            })?;
        let mut grpc = ServerTlsConfig::new().identity(Identity::from_pem(&cert_pem, &key_pem));
        if let Some(ca) = client_ca {
            let (ca_pem, ca_certs) = certificates("--tls-client-ca", ca)?;
            client_verifier(ca_certs, provider).with_context(|| format!("--tls-client-ca {}", ca.display()))?;
            grpc = grpc.client_ca_root(Certificate::from_pem(ca_pem));
        }
        Ok(ServerTls { http, grpc })
    }

    /// For actix-web's `listen_rustls_0_23` (which adds the ALPN protocols itself).
    pub fn http(&self) -> rustls::ServerConfig {
        self.http.clone()
    }

    /// For tonic's server, with a bound on the handshake.
    pub fn grpc(&self, handshake_timeout: Duration) -> ServerTlsConfig {
        self.grpc.clone().timeout(handshake_timeout)
    }
}

fn read(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag} {}: cannot read the file", path.display()))
}

/// The file's bytes and the certificates it holds (at least one).
fn certificates(flag: &str, path: &Path) -> anyhow::Result<(Vec<u8>, Vec<CertificateDer<'static>>)> {
    let pem = read(flag, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{flag} {}: not a PEM certificate file: {e}", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{flag} {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in the file",
        path.display()
    );
    Ok((pem, certs))
}

/// Checks that the CA certificates can verify clients, as tonic will.
fn client_verifier(certs: Vec<CertificateDer<'static>>, provider: Arc<CryptoProvider>) -> anyhow::Result<()> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).context("not a usable CA certificate")?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .context("cannot verify clients with these certificates")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: std::path::PathBuf,
    }

    impl Files {
        fn new() -> Files {
            let dir = std::env::temp_dir().join(format!("votestream-tls-unit-{}", uuid::Uuid::now_v7()));
            std::fs::create_dir_all(&dir).unwrap();
            Files { dir }
        }

        fn write(&self, name: &str, contents: &str) -> std::path::PathBuf {
            let path = self.dir.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn self_signed() -> (String, String) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (certified.cert.pem(), certified.signing_key.serialize_pem())
    }

    #[test]
    fn a_certificate_and_its_key_load() {
        let files = Files::new();
        let (cert, key) = self_signed();
        let (cert, key) = (files.write("cert.pem", &cert), files.write("key.pem", &key));
        ServerTls::load(&cert, &key, Some(&cert)).expect("loads, with a client CA too");
    }

    #[test]
    fn a_missing_file_is_named_with_its_flag() {
        let files = Files::new();
        let (cert, _) = self_signed();
        let cert = files.write("cert.pem", &cert);
        let missing = files.dir.join("nowhere.pem");
        let err = format!("{:#}", ServerTls::load(&cert, &missing, None).err().unwrap());
        assert!(
            err.starts_with(&format!("--tls-key {}: cannot read", missing.display())),
            "{err}"
        );
    }

    #[test]
    fn a_file_without_certificates_is_refused_by_name() {
        let files = Files::new();
        let (_, key) = self_signed();
        let key = files.write("key.pem", &key);
        let err = format!("{:#}", ServerTls::load(&key, &key, None).err().unwrap());
        assert!(
            err.contains(&format!("--tls-cert {}: no PEM certificate", key.display())),
            "{err}"
        );
        let text = files.write("text.pem", "not a certificate\n");
        let err = format!("{:#}", ServerTls::load(&text, &key, None).err().unwrap());
        assert!(err.contains("--tls-cert"), "{err}");
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let files = Files::new();
        let (cert, _) = self_signed();
        let (_, other_key) = self_signed();
        let (cert, key) = (files.write("cert.pem", &cert), files.write("key.pem", &other_key));
        let err = format!("{:#}", ServerTls::load(&cert, &key, None).err().unwrap());
        assert!(err.contains("does not go with the certificate"), "{err}");
        let err = format!("{:#}", ServerTls::load(&cert, &cert, None).err().unwrap());
        assert!(err.contains("--tls-key") && err.contains("no private key"), "{err}");
    }
}
