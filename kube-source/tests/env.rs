//! `client_from_env` with and without a kubeconfig (one test in its own binary: it sets
//! environment variables).

use weft_kube::{client_from_env, Error};

#[tokio::test]
async fn client_from_env_reads_kubeconfig_and_explains_its_absence() {
    let dir = std::env::temp_dir().join(format!("weft-kube-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::env::remove_var("KUBERNETES_SERVICE_HOST");
    std::env::remove_var("KUBERNETES_SERVICE_PORT");
    std::env::set_var("HOME", &dir);
    std::env::set_var("KUBECONFIG", dir.join("absent"));
    let err = client_from_env().await.err().expect("no configuration");
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(
        err.to_string().contains("no Kubernetes configuration"),
        "{err}"
    );

    // An https API server: the client builds (TLS is compiled in); nothing is contacted.
    let kubeconfig = dir.join("config");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
         clusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:1\n    \
         insecure-skip-tls-verify: true\n\
         contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    \
         namespace: shop\n\
         users:\n- name: test\n  user:\n    token: not-a-real-token\n",
    )
    .unwrap();
    std::env::set_var("KUBECONFIG", &kubeconfig);
    let client = client_from_env().await.expect("a client");
    assert_eq!(client.default_namespace(), "shop");
    std::fs::remove_dir_all(&dir).unwrap();
}
