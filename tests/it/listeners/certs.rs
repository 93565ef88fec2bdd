//! A certificate authority and the certificates the TLS tests need, made at
//! run time with rcgen and written as PEM files to a directory of their own:
//! the server's (for `localhost` and 127.0.0.1), a front-end's client
//! certificate, and a second CA that nothing trusts, with its own client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use votestream::proto::vote_service_client::VoteServiceClient;

use crate::common::unique;

/// A certificate and its private key, as PEM.
pub struct Pem {
    pub cert: String,
    pub key: String,
}

struct Authority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    fn new(name: &str) -> Authority {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        let cert_pem = params.self_signed(&key).expect("a self-signed CA").pem();
        Authority {
            cert_pem,
            issuer: Issuer::new(params, key),
        }
    }

    fn sign(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Pem {
        let key = KeyPair::generate().expect("a key");
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("certificate parameters");
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).expect("a signed certificate");
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// The test PKI; its files are deleted on drop.
pub struct Pki {
    dir: PathBuf,
    /// The CA that signs the server's and the front-end's certificates.
    pub ca: String,
    pub client: Pem,
    /// A CA nothing is configured to trust, and a client certificate it signed.
    pub stranger_ca: String,
    pub stranger_client: Pem,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub ca_file: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let ca = Authority::new("votestream test CA");
        let stranger = Authority::new("a stranger's CA");
        let server = ca.sign(&["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        let dir = std::env::temp_dir().join(unique("votestream-tls"));
        std::fs::create_dir_all(&dir).expect("a directory for the PEM files");
        let write = |name: &str, contents: &str| {
            let path = dir.join(name);
            std::fs::write(&path, contents).expect("a PEM file");
            path
        };
        let (server_cert, server_key, ca_file) = (
            write("server.pem", &server.cert),
            write("server.key", &server.key),
            write("ca.pem", &ca.cert_pem),
        );
        Pki {
            client: ca.sign(&["front-end"], ExtendedKeyUsagePurpose::ClientAuth),
            stranger_client: stranger.sign(&["intruder"], ExtendedKeyUsagePurpose::ClientAuth),
            ca: ca.cert_pem,
            stranger_ca: stranger.cert_pem,
            server_cert,
            server_key,
            ca_file,
            dir,
        }
    }

    /// `--tls-cert <server.pem> --tls-key <server.key>`.
    pub fn server_flags(&self) -> Vec<&str> {
        vec![
            "--tls-cert",
            path(&self.server_cert),
            "--tls-key",
            path(&self.server_key),
        ]
    }

    /// An HTTPS client that trusts `ca` only.
    pub fn https_client(ca: &str) -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("a CA certificate"))
            .build()
            .expect("an HTTPS client")
    }

    /// A gRPC client over TLS that trusts `ca`, presenting `identity` if any.
    pub async fn grpc_client(
        addr: SocketAddr,
        ca: &str,
        identity: Option<&Pem>,
    ) -> Result<VoteServiceClient<Channel>, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name("localhost");
        if let Some(pem) = identity {
            tls = tls.identity(Identity::from_pem(&pem.cert, &pem.key));
        }
        let channel = Channel::from_shared(format!("https://{addr}"))
            .expect("a URI")
            .tls_config(tls)?
            .connect()
            .await?;
        Ok(VoteServiceClient::new(channel))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}
