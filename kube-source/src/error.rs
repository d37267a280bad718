//! The crate's error type.

/// What can go wrong setting up the Kubernetes source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither an in-cluster configuration nor a kubeconfig could be loaded.
    #[error(
        "no Kubernetes configuration: not in a pod (KUBERNETES_SERVICE_HOST and the service \
         account token) and no usable kubeconfig (KUBECONFIG or ~/.kube/config): {0}"
    )]
    Config(#[source] kube::config::InferConfigError),
    /// A kubeconfig file that cannot be read or used.
    #[error("the kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// A list request failed.
    #[error("listing {kind} objects: {source}")]
    List {
        /// The kind listed.
        kind: &'static str,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The API server is reached over HTTPS but this build has no TLS stack.
    #[error(
        "the API server {url} needs TLS, and this build of weft has no TLS support for the \
         Kubernetes client (kube's rustls-tls feature is off)"
    )]
    TlsUnavailable {
        /// The API server's URL.
        url: String,
    },
    /// The client could not be built from the configuration (certificates, credentials).
    #[error("cannot build a Kubernetes client for {url}: {source}")]
    Client {
        /// The API server's URL.
        url: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
}
