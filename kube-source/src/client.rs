//! The client the router uses: the in-cluster configuration or a kubeconfig.

use crate::Error;

/// A client for the cluster this process runs in or points at.
///
/// kube's inference: a kubeconfig (`KUBECONFIG`, else `~/.kube/config`) if there is one, else
/// the in-cluster configuration (`KUBERNETES_SERVICE_HOST`/`_PORT` and the service account's
/// token and CA under `/var/run/secrets/kubernetes.io/serviceaccount/`).
///
/// # Errors
///
/// [`Error::Config`] when neither can be loaded, [`Error::TlsUnavailable`] for an `https` API
/// server in a build without TLS, [`Error::Client`] when the client cannot be built (bad
/// certificate or credentials).
pub async fn client_from_env() -> Result<kube::Client, Error> {
    let config = kube::Config::infer().await.map_err(Error::Config)?;
    client_from_config(config)
}

/// A client from the kubeconfig file at `path` (its current context), with the same checks as
/// [`client_from_env`].
///
/// # Errors
///
/// As [`client_from_env`]; [`Error::Kubeconfig`] names the file when it cannot be read or used.
pub async fn client_from_kubeconfig(path: &std::path::Path) -> Result<kube::Client, Error> {
    let err = |source| Error::Kubeconfig {
        path: path.display().to_string(),
        source,
    };
    let kc = kube::config::Kubeconfig::read_from(path).map_err(err)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(err)?;
    client_from_config(config)
}

/// A client from an explicit configuration, with the same checks as [`client_from_env`].
pub(crate) fn client_from_config(config: kube::Config) -> Result<kube::Client, Error> {
    let url = config.cluster_url.to_string();
    if !crate::TLS && config.cluster_url.scheme_str() == Some("https") {
        return Err(Error::TlsUnavailable { url });
    }
    kube::Client::try_from(config).map_err(|source| Error::Client { url, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plain_http_builds_and_https_depends_on_tls() {
        let http = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        assert!(client_from_config(http).is_ok());
        let https = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
        match (client_from_config(https), crate::TLS) {
            (Ok(_), true) => {}
            (Err(e @ Error::TlsUnavailable { .. }), false) => {
                assert!(e.to_string().contains("https://127.0.0.1:1"), "{e}");
            }
            (other, tls) => panic!("TLS built: {tls}, error: {:?}", other.err()),
        }
    }
}
