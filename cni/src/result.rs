//! CNI results: what ADD prints, and what `prevResult` holds. One model, encoded per version:
//! 0.4.0 results carry `ips[].version` ("4" or "6"), 1.x results do not; interface `mtu` exists
//! from 1.1.0 on. Fields weft-cni does not know (in a `prevResult` from another plugin) are kept
//! and passed through.

use crate::version::Version;
use serde_json::{json, Map, Value};

/// One interface of a result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: Option<String>,
    /// MTU (printed in 1.1.0 results only).
    pub mtu: Option<u32>,
    /// The network namespace path, for interfaces inside the container.
    pub sandbox: Option<String>,
    /// Other fields, passed through.
    pub extra: Map<String, Value>,
}

/// One address of a result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ip {
    /// `A.B.C.D/len`.
    pub address: String,
    /// The default gateway for this address.
    pub gateway: Option<String>,
    /// Index into the result's interfaces.
    pub interface: Option<u64>,
    /// Other fields, passed through.
    pub extra: Map<String, Value>,
}

/// One route of a result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Route {
    /// Destination, `A.B.C.D/len`.
    pub dst: String,
    /// Next hop.
    pub gw: Option<String>,
    /// Other fields, passed through.
    pub extra: Map<String, Value>,
}

/// A CNI result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CniResult {
    /// Interfaces.
    pub interfaces: Vec<Interface>,
    /// Addresses.
    pub ips: Vec<Ip>,
    /// Routes.
    pub routes: Vec<Route>,
    /// DNS settings (an object, passed through).
    pub dns: Option<Value>,
}

fn take_string(
    obj: &mut Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<String>, String> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(format!("{what}.{key} must be a string, not {v}")),
    }
}

fn take_objects(
    obj: &mut Map<String, Value>,
    key: &str,
) -> Result<Vec<Map<String, Value>>, String> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|i| match i {
                Value::Object(o) => Ok(o),
                other => Err(format!("{key} entries must be objects, not {other}")),
            })
            .collect(),
        Some(v) => Err(format!("{key} must be a list, not {v}")),
    }
}

impl CniResult {
    /// Decodes a result (a `prevResult`) in any supported version.
    pub fn from_value(v: &Value) -> Result<CniResult, String> {
        let Value::Object(obj) = v else {
            return Err(format!("a result must be an object, not {v}"));
        };
        let mut obj = obj.clone();
        let interfaces = take_objects(&mut obj, "interfaces")?
            .into_iter()
            .map(|mut o| {
                let name = take_string(&mut o, "name", "interfaces[]")?
                    .ok_or("interfaces[] entries need a name")?;
                let mac = take_string(&mut o, "mac", "interfaces[]")?;
                let sandbox = take_string(&mut o, "sandbox", "interfaces[]")?;
                let mtu = match o.remove("mtu") {
                    None | Some(Value::Null) => None,
                    Some(m) => Some(
                        m.as_u64()
                            .and_then(|m| u32::try_from(m).ok())
                            .ok_or(format!("interfaces[].mtu must be a number, not {m}"))?,
                    ),
                };
                Ok(Interface {
                    name,
                    mac,
                    mtu,
                    sandbox,
                    extra: o,
                })
            })
            .collect::<Result<_, String>>()?;
        let ips = take_objects(&mut obj, "ips")?
            .into_iter()
            .map(|mut o| {
                let address = take_string(&mut o, "address", "ips[]")?
                    .ok_or("ips[] entries need an address")?;
                let gateway = take_string(&mut o, "gateway", "ips[]")?;
                let interface = match o.remove("interface") {
                    None | Some(Value::Null) => None,
                    Some(i) => Some(
                        i.as_u64()
                            .ok_or(format!("ips[].interface must be an index, not {i}"))?,
                    ),
                };
                // Derived from the address when printing for 0.4.0.
                o.remove("version");
                Ok(Ip {
                    address,
                    gateway,
                    interface,
                    extra: o,
                })
            })
            .collect::<Result<_, String>>()?;
        let routes = take_objects(&mut obj, "routes")?
            .into_iter()
            .map(|mut o| {
                let dst =
                    take_string(&mut o, "dst", "routes[]")?.ok_or("routes[] entries need a dst")?;
                let gw = take_string(&mut o, "gw", "routes[]")?;
                Ok(Route { dst, gw, extra: o })
            })
            .collect::<Result<_, String>>()?;
        let dns = match obj.remove("dns") {
            None | Some(Value::Null) => None,
            Some(d @ Value::Object(_)) => Some(d),
            Some(d) => return Err(format!("dns must be an object, not {d}")),
        };
        Ok(CniResult {
            interfaces,
            ips,
            routes,
            dns,
        })
    }

    /// Appends `other`'s interfaces, addresses and routes to this result (its interface indices
    /// shifted past ours); keeps our DNS, or takes `other`'s when we have none.
    pub fn append(&mut self, other: CniResult) {
        let shift = self.interfaces.len() as u64;
        self.interfaces.extend(other.interfaces);
        self.ips.extend(other.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + shift);
            ip
        }));
        self.routes.extend(other.routes);
        if self.dns.is_none() {
            self.dns = other.dns;
        }
    }

    /// The result as JSON, in the form of CNI version `version`.
    pub fn to_value(&self, version: Version) -> Value {
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut o = i.extra.clone();
                o.insert("name".into(), json!(i.name));
                if let Some(mac) = &i.mac {
                    o.insert("mac".into(), json!(mac));
                }
                match i.mtu {
                    Some(mtu) if version >= Version::V1_1_0 => {
                        o.insert("mtu".into(), json!(mtu));
                    }
                    _ => {}
                }
                if let Some(sandbox) = &i.sandbox {
                    o.insert("sandbox".into(), json!(sandbox));
                }
                Value::Object(o)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = ip.extra.clone();
                if version == Version::V0_4_0 {
                    let family = if ip.address.contains(':') { "6" } else { "4" };
                    o.insert("version".into(), json!(family));
                }
                o.insert("address".into(), json!(ip.address));
                if let Some(gw) = &ip.gateway {
                    o.insert("gateway".into(), json!(gw));
                }
                if let Some(i) = ip.interface {
                    o.insert("interface".into(), json!(i));
                }
                Value::Object(o)
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut o = r.extra.clone();
                o.insert("dst".into(), json!(r.dst));
                if let Some(gw) = &r.gw {
                    o.insert("gw".into(), json!(gw));
                }
                Value::Object(o)
            })
            .collect();
        json!({
            "cniVersion": version.as_str(),
            "interfaces": interfaces,
            "ips": ips,
            "routes": routes,
            "dns": self.dns.clone().unwrap_or_else(|| json!({})),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "vw0123456789".into(),
                    mac: Some("02:00:00:00:00:01".into()),
                    mtu: Some(1436),
                    ..Interface::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("02:00:00:00:00:02".into()),
                    mtu: Some(1436),
                    sandbox: Some("/run/netns/p".into()),
                    ..Interface::default()
                },
            ],
            ips: vec![Ip {
                address: "10.32.0.2/12".into(),
                gateway: Some("10.32.0.1".into()),
                interface: Some(1),
                ..Ip::default()
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".into(),
                gw: Some("10.32.0.1".into()),
                ..Route::default()
            }],
            dns: None,
        }
    }

    #[test]
    fn encoding_per_version() {
        let v040 = ours().to_value(Version::V0_4_0);
        assert_eq!(v040["cniVersion"], "0.4.0");
        assert_eq!(v040["ips"][0]["version"], "4");
        assert_eq!(v040["ips"][0]["address"], "10.32.0.2/12");
        assert_eq!(v040["ips"][0]["gateway"], "10.32.0.1");
        assert_eq!(v040["ips"][0]["interface"], 1);
        assert!(v040["interfaces"][1].get("mtu").is_none());
        assert_eq!(v040["interfaces"][1]["sandbox"], "/run/netns/p");
        assert_eq!(
            v040["routes"][0],
            json!({"dst": "0.0.0.0/0", "gw": "10.32.0.1"})
        );
        assert_eq!(v040["dns"], json!({}));

        let v100 = ours().to_value(Version::V1_0_0);
        assert_eq!(v100["cniVersion"], "1.0.0");
        assert!(v100["ips"][0].get("version").is_none());
        assert!(v100["interfaces"][0].get("mtu").is_none());
        assert!(v100["interfaces"][0].get("sandbox").is_none());

        let v110 = ours().to_value(Version::V1_1_0);
        assert_eq!(v110["cniVersion"], "1.1.0");
        assert_eq!(v110["interfaces"][1]["mtu"], 1436);
        assert!(v110["ips"][0].get("version").is_none());
    }

    #[test]
    fn round_trip_and_pass_through() {
        for version in [Version::V0_4_0, Version::V1_0_0, Version::V1_1_0] {
            let v = ours().to_value(version);
            let back = CniResult::from_value(&v).unwrap();
            let mut expected = ours();
            expected.dns = Some(json!({}));
            if version < Version::V1_1_0 {
                for i in &mut expected.interfaces {
                    i.mtu = None;
                }
            }
            assert_eq!(back, expected, "{version:?}");
        }
        let prev = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "x", "pciID": "0000:00:01.0"}],
            "ips": [{"address": "fd00::2/64", "interface": 0, "version": "6"}],
            "routes": [{"dst": "fd00::/8", "mtu": 1300}],
            "dns": {"nameservers": ["1.1.1.1"]}
        });
        let r = CniResult::from_value(&prev).unwrap();
        let out = r.to_value(Version::V0_4_0);
        assert_eq!(out["interfaces"][0]["pciID"], "0000:00:01.0");
        assert_eq!(out["ips"][0]["version"], "6");
        assert_eq!(out["routes"][0]["mtu"], 1300);
        assert_eq!(out["dns"]["nameservers"][0], "1.1.1.1");
    }

    #[test]
    fn append_shifts_interface_indices() {
        let prev = CniResult::from_value(&json!({
            "interfaces": [{"name": "a"}],
            "ips": [{"address": "192.0.2.1/24", "interface": 0}],
            "dns": {"domain": "x"}
        }))
        .unwrap();
        let mut merged = prev.clone();
        merged.append(ours());
        assert_eq!(merged.interfaces.len(), 3);
        assert_eq!(merged.ips[0].interface, Some(0));
        assert_eq!(merged.ips[1].interface, Some(2));
        assert_eq!(merged.routes.len(), 1);
        assert_eq!(merged.dns, Some(json!({"domain": "x"})));
    }

    #[test]
    fn malformed_results_are_refused() {
        for bad in [
            json!(7),
            json!({"ips": {}}),
            json!({"ips": [{"gateway": "1.2.3.4"}]}),
            json!({"interfaces": [{"mac": "x"}]}),
            json!({"interfaces": [{"name": "x", "mtu": "big"}]}),
            json!({"routes": [{"gw": "1.2.3.4"}]}),
            json!({"dns": []}),
        ] {
            assert!(CniResult::from_value(&bad).is_err(), "{bad}");
        }
    }
}
