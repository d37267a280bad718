//! The NetworkPolicy compiler at cluster scale (weft-policy): the synthetic clusters of
//! `weft_policy::synthetic` with 1,000 pods and 100 policies, and 10,000 pods and 1,000 policies
//! (100 namespaces, one host in 47 holding the local pods): the compile, the ruleset, the full
//! `nft -f` script of a first start, and the transaction after one pod moves to another address
//! (what a CNI ADD or DEL costs the router).
//!
//! Run with `cargo bench -p weft-benches --bench policy`. Before the timings it prints the size of
//! each ruleset (chains, sets, elements, script lines and bytes). docs/policy.md has a copy.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use weft_policy::synthetic::Synthetic;
use weft_policy::{compile, nft, Cluster};

fn bench(c: &mut Criterion) {
    for (label, namespaces, pods, policies) in [
        ("1k-pods-100-policies", 10, 100, 10),
        ("10k-pods-1k-policies", 100, 100, 10),
    ] {
        let s = Synthetic::new(namespaces, pods, policies, 47);
        let mut cluster = Cluster::new();
        cluster.replace_all(&s.objects).expect("a valid cluster");
        let rules = compile(&cluster, &s.addresses, &s.local);
        let rs = nft::ruleset(&rules);
        let script = nft::transaction(None, &rs);
        let elements: usize = rs.sets.values().map(|s| s.elements.len()).sum();
        // One pod moves to another host (the change a pod coming or going makes).
        let more = s.addresses_after_one_pod_moved();
        let rs2 = nft::ruleset(&compile(&cluster, &more, &s.local));
        let step = nft::transaction(Some(&rs), &rs2);
        println!(
            "{label}: {} local pods, {} chains, {} sets, {elements} elements, {} script lines ({} KiB); one pod moved: {} lines",
            s.local.len(),
            rs.chains.len(),
            rs.sets.len(),
            script.lines().count(),
            script.len() / 1024,
            step.lines().count()
        );
        let mut g = c.benchmark_group(label);
        g.sample_size(10);
        g.bench_function("compile", |b| {
            b.iter(|| compile(black_box(&cluster), &s.addresses, &s.local))
        });
        g.bench_function("ruleset", |b| b.iter(|| nft::ruleset(black_box(&rules))));
        g.bench_function("first script", |b| {
            b.iter(|| nft::transaction(None, black_box(&rs)))
        });
        g.bench_function("one pod moved: compile + transaction", |b| {
            b.iter(|| {
                let rs2 = nft::ruleset(&compile(&cluster, black_box(&more), &s.local));
                nft::transaction(Some(&rs), &rs2)
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
