//! The container image (issue 16), built offline by `scripts/build-image.sh` (a Debian root from
//! the package mirror, no registry pull) and run by podman as a node runs the DaemonSet:
//!
//! - the image has deploy/kubernetes/Dockerfile's entrypoint and packages, its tools (nft, ip,
//!   modprobe) run;
//! - the DaemonSet's install-cni step, run in the image, installs a `weft-cni` identical to the
//!   release one stripped (the image's binaries are stripped, as the .deb's);
//! - host h1's router runs from the image inside h1's namespace (`--network ns:`, privileged,
//!   `/run/weft` bind-mounted from the lab's state directory of h1), host h2's from the binary;
//!   they peer, each pod (attached by cnitool with cluster IPAM) reaches the other, the
//!   DaemonSet's readiness probe (`weft status` in the container) shows h2 established, and the
//!   router in the container installed its masquerade table with the image's nft.
//!
//! The archive is built once per pair of binaries and kept under the target directory
//! (`tests/src/podman.rs`); the container is removed when the test ends, passed or failed.

use std::path::Path;
use std::time::{Duration, Instant};
use weft_lab::testbed::{ping, weft_bin, Cluster};
use weft_lab::{poll_until, Host};
use weft_tests::cni::{Cni, CniPod};
use weft_tests::guarded::POD_CIDR;
use weft_tests::podman::{image_archive, Container, Podman};

/// The DaemonSet's install-cni step (deploy/kubernetes/weft.yaml), word for word.
const INSTALL_CNI: &str = "cp /usr/local/bin/weft-cni /host/opt/cni/bin/weft-cni.tmp\n\
                           mv /host/opt/cni/bin/weft-cni.tmp /host/opt/cni/bin/weft-cni";

/// The packages deploy/kubernetes/Dockerfile installs and its entrypoint as JSON.
fn dockerfile() -> (Vec<String>, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/Dockerfile");
    let text = std::fs::read_to_string(&path).unwrap();
    let install = text
        .lines()
        .find_map(|l| l.split_once("--no-install-recommends "))
        .expect("no apt-get install in the Dockerfile")
        .1;
    let packages = install
        .split_whitespace()
        .take_while(|w| !w.starts_with('&') && *w != "\\")
        .map(String::from)
        .collect();
    let entrypoint = text
        .lines()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("no ENTRYPOINT in the Dockerfile")
        .replace(' ', "");
    (packages, entrypoint)
}

fn add_pod(c: &mut Cluster, cni: &Cni, host: &Host, net: &str, log: &dyn Fn() -> String) -> CniPod {
    let ns = c.lab.add_netns(&format!("{}-a", host.name)).unwrap();
    cni.cnitool_add(&c.lab, host, net, &ns)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", log()))
}

fn talks(c: &Cluster, from: &CniPod, to: &CniPod) {
    let got = poll_until(Duration::from_secs(15), Duration::from_millis(200), || {
        let s = ping(&c.lab, &from.ns, to.ip, 3).ok()?;
        (s.received >= 2).then_some(())
    });
    assert!(
        got.is_some(),
        "{} ({}) cannot reach {} ({})",
        from.ns,
        from.ip,
        to.ns,
        to.ip
    );
}

#[test]
fn the_image_runs_the_router_under_podman_and_peers_with_a_binary_router() {
    assert!(weft_lab::require_root(), "this test needs root");
    let start = Instant::now();
    let podman = Podman::new().unwrap();
    let (archive, built) = image_archive().unwrap();
    eprintln!("image: {} ({built:.1?})", archive.display());
    let image = podman.load(&archive).unwrap();

    // The Dockerfile's entrypoint and packages; the tools run.
    let (packages, entrypoint) = dockerfile();
    let got = podman
        .ok(&[
            "image",
            "inspect",
            "--format",
            "{{json .Config.Entrypoint}}",
            &image,
        ])
        .unwrap();
    assert_eq!(
        got.trim(),
        entrypoint,
        "the entrypoint is not the Dockerfile's"
    );
    let version = podman.run_rm(&[&image, "--version"]).unwrap();
    assert!(version.starts_with("weft "), "{version}");
    let script = format!(
        "dpkg-query -W -f='${{Package}} ${{Status}}\\n' {}\n\
         nft --version; ip -V; modprobe --version",
        packages.join(" ")
    );
    let tools = podman
        .run_rm(&["--entrypoint", "/bin/sh", &image, "-ec", &script])
        .unwrap();
    for p in &packages {
        assert!(
            tools.contains(&format!("{p} install ok installed")),
            "the Dockerfile's {p} is not installed in the image:\n{tools}"
        );
    }
    assert!(tools.contains("nftables v"), "{tools}");

    let mut c = Cluster::new("wimg", weft_bin().unwrap()).unwrap();

    // The install-cni init container, into a directory standing for the node's /opt/cni/bin.
    let cni_bin = c.lab.dir().join("opt-cni-bin");
    std::fs::create_dir_all(&cni_bin).unwrap();
    let mount = format!("{}:/host/opt/cni/bin", cni_bin.display());
    podman
        .run_rm(&[
            "--volume",
            &mount,
            "--entrypoint",
            "/bin/sh",
            &image,
            "-ec",
            INSTALL_CNI,
        ])
        .unwrap();
    // Those containers had no network: podman's default bridge would have put `cni-podman0` and
    // its firewall chains in the root network namespace.
    let root_links = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let root_links = String::from_utf8_lossy(&root_links.stdout);
    assert!(
        !root_links.contains("cni-podman"),
        "podman made a bridge in the root namespace:\n{root_links}"
    );
    let release_cni = weft_bin().unwrap().with_file_name("weft-cni");
    let stripped = c.lab.dir().join("weft-cni.stripped");
    let out = std::process::Command::new("strip")
        .arg("--strip-unneeded")
        .arg("-o")
        .arg(&stripped)
        .arg(&release_cni)
        .output()
        .unwrap();
    assert!(out.status.success(), "strip: {out:?}");
    assert!(
        std::fs::read(cni_bin.join("weft-cni")).unwrap() == std::fs::read(&stripped).unwrap(),
        "the weft-cni the image installed is not {}, stripped",
        release_cni.display()
    );

    // h1: the router from the image, on the lab's state directory of h1 (its /run/weft).
    let h1 = c.add_host("h1").unwrap();
    let h2 = c.add_host("h2").unwrap();
    let state1 = c.state_dir(&h1);
    std::fs::create_dir_all(&state1).unwrap();
    let args: Vec<String> = [
        "router",
        "--name",
        &h1.name,
        "--listen",
        &h1.underlay_ip.to_string(),
        "--state-dir",
        "/run/weft",
        "--peer",
        &h2.underlay_ip.to_string(),
        "--pod-cidr",
        POD_CIDR,
        "--ipam-init-peers",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let name = format!("{}-h1", c.lab.prefix());
    let router1: Container = podman
        .start_in_host(&h1, &name, &image, &[(&state1, "/run/weft")], &args)
        .unwrap();
    let log1 = || format!("the container's log:\n{}", router1.logs());
    let up = poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        c.status(&h1).ok()
    });
    assert!(
        up.is_some(),
        "the router in the container did not answer; {}",
        log1()
    );

    // h2: the router from the binary, as the other tests start it.
    c.start_router(
        &h2,
        &[&h1],
        &["--pod-cidr", POD_CIDR, "--ipam-init-peers", "2"],
    )
    .unwrap();
    for h in [&h1, &h2] {
        c.wait_peers(h, 1, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e:#}\n{}", log1()));
    }
    assert_eq!(router1.state().unwrap(), "running");

    // A pod on each host through cnitool and weft-cni, with addresses from cluster IPAM.
    let cni = Cni::new(&c.lab).unwrap();
    let nets: Vec<String> = [&h1, &h2]
        .iter()
        .map(|h| {
            cni.write_conflist(h, "weft", vec![Cni::weft_plugin(&c.state_dir(h))])
                .unwrap()
        })
        .collect();
    for h in [&h1, &h2] {
        let ready = poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
            c.ipam(h).ok().filter(|r| r.ready)
        });
        assert!(ready.is_some(), "{} IPAM not ready; {}", h.name, log1());
    }
    let pod1 = add_pod(&mut c, &cni, &h1, &nets[0], &log1);
    let pod2 = add_pod(&mut c, &cni, &h2, &nets[1], &log1);
    talks(&c, &pod1, &pod2);
    talks(&c, &pod2, &pod1);

    // The DaemonSet's readiness probe, in the container, and the peer as each side sees it.
    let probe = router1
        .exec(&["weft", "status", "--state-dir", "/run/weft"])
        .unwrap();
    let line = probe
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == "h2"))
        .unwrap_or_else(|| panic!("no h2 in the probe's status:\n{probe}"));
    assert!(line.contains("established"), "{probe}");
    for (h, other) in [(&h1, &h2), (&h2, &h1)] {
        let r = c.status(h).unwrap();
        let p = r.peers.iter().find(|p| p.nickname == other.name);
        assert!(
            // The pods' frames came through this router, unless the fast path was chosen
            // before they first talked (then the kernel carried them).
            p.is_some_and(
                |p| p.state == "established" && (p.rx_frames > 0 || p.path == "fast path")
            ),
            "{}: {:?}",
            h.name,
            r.peers
        );
    }

    // The router in the container drove the image's nft in h1's namespace.
    let tables = router1.exec(&["nft", "list", "tables"]).unwrap();
    assert!(tables.contains("table ip weft"), "{tables}");
    assert!(
        Path::new(&state1).join("weft.sock").exists(),
        "no API socket in the bind-mounted state directory"
    );
    eprintln!("image test: {:.1?} in all", start.elapsed());
}
