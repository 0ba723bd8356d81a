//! Policy documents as users bring them: YAML or JSON, several per file separated by `---`
//! (or concatenated JSON objects, or one array of them), and `kind: List` with `items` (what
//! `kubectl get -o yaml` prints). Each document is read into a generic value first, so that its `apiVersion` and
//! `kind` pick the type, then into that type with the path of any bad field kept.
//!
//! YAML is read by `serde-saphyr`: pure Rust, no panics on malformed input, and limits on
//! aliases and nesting (a policy file may come from anyone who can run `policy apply`), with
//! YAML 1.2's booleans.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::model::*;
use super::validate::{self, FieldError};
use super::PolicyError;

/// Fields the API server fills in; `kubectl get -o yaml` output carries them, and they mean
/// nothing here, so they are dropped rather than refused.
const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "finalizers",
    "ownerReferences",
];

/// Every policy in `text`, in document order, each validated and defaulted
/// (`metadata.namespace` of a NetworkPolicy: `default`).
pub fn parse_policies(text: &str) -> Result<Vec<Policy>, PolicyError> {
    let mut policies = Vec::new();
    for (index, doc) in documents(text)?.into_iter().enumerate() {
        let where_ = format!("document {}", index + 1);
        match doc {
            Value::Null => {}
            // A bare list of objects (a JSON array), read like a List's items.
            Value::Array(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    policies.push(policy_from_value(item, &format!("{where_}, [{i}]"))?);
                }
            }
            Value::Object(ref map) if map.get("kind") == Some(&Value::from("List")) => {
                let items = match map.get("items") {
                    Some(Value::Array(items)) => items.clone(),
                    None | Some(Value::Null) => Vec::new(),
                    Some(_) => {
                        return Err(invalid(&where_, "items", "a List's items must be a list"))
                    }
                };
                for (i, item) in items.into_iter().enumerate() {
                    policies.push(policy_from_value(item, &format!("{where_}, items[{i}]"))?);
                }
            }
            other => policies.push(policy_from_value(other, &where_)?),
        }
    }
    Ok(policies)
}

/// The documents of a file, as generic values.
fn documents(text: &str) -> Result<Vec<Value>, PolicyError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        // JSON: serde_json's messages are precise, and it reads concatenated objects.
        return serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PolicyError::Syntax(format!("JSON: {e}")));
    }
    // YAML 1.2's booleans (true/false only): under YAML 1.1's, `ns: y` or `values: [y, n]`
    // (the conformance namespaces) would turn into booleans and no longer select anything.
    let options = serde_saphyr::options! { strict_booleans: true };
    serde_saphyr::from_multiple_with_options::<Value>(text, options)
        .map_err(|e| PolicyError::Syntax(format!("YAML: {e}")))
}

fn invalid(object: &str, path: &str, message: &str) -> PolicyError {
    PolicyError::Invalid {
        object: object.to_string(),
        path: path.to_string(),
        message: message.to_string(),
    }
}

/// One object (a document, a List item, or a stored record) into a validated policy.
/// `where_` names it in errors until its own name is known.
pub fn policy_from_value(value: Value, where_: &str) -> Result<Policy, PolicyError> {
    let Value::Object(mut map) = value else {
        return Err(invalid(
            where_,
            ".",
            "expected an object with apiVersion and kind",
        ));
    };
    let api_version = take_string(&mut map, "apiVersion", where_)?;
    let kind = take_string(&mut map, "kind", where_)?;
    let expected_api = match kind.as_str() {
        NETWORK_POLICY_KIND => NETWORK_POLICY_API,
        ADMIN_POLICY_KIND | BASELINE_POLICY_KIND => ADMIN_POLICY_API,
        _ => {
            return Err(invalid(
                where_,
                "kind",
                &format!("{kind:?} is not a policy kind (expected {NETWORK_POLICY_KIND}, {ADMIN_POLICY_KIND} or {BASELINE_POLICY_KIND})"),
            ))
        }
    };
    if api_version != expected_api {
        return Err(invalid(
            where_,
            "apiVersion",
            &format!("{api_version:?}: {kind} is {expected_api}"),
        ));
    }
    map.remove("status");
    if let Some(Value::Object(meta)) = map.get_mut("metadata") {
        for field in SERVER_METADATA {
            meta.remove(*field);
        }
    }
    // Name errors after the object once its name can be read.
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(|n| format!("{kind} {n}"))
        .unwrap_or_else(|| format!("{where_} ({kind})"));
    let value = Value::Object(map);
    let policy = match kind.as_str() {
        NETWORK_POLICY_KIND => {
            let mut p: NetworkPolicy = typed(value, &name)?;
            p.metadata
                .namespace
                .get_or_insert_with(|| DEFAULT_NAMESPACE.to_string());
            let name = format!("{kind} {}", p.key().short_name());
            validate::network_policy(&p).map_err(|e| field_error(&name, e))?;
            Policy::Network(p)
        }
        ADMIN_POLICY_KIND => {
            let p: AdminNetworkPolicy = typed(value, &name)?;
            validate::admin_policy(&p).map_err(|e| field_error(&name, e))?;
            Policy::Admin(p)
        }
        _ => {
            let p: BaselineAdminNetworkPolicy = typed(value, &name)?;
            validate::baseline_policy(&p).map_err(|e| field_error(&name, e))?;
            Policy::Baseline(p)
        }
    };
    Ok(policy)
}

fn take_string(
    map: &mut Map<String, Value>,
    field: &str,
    where_: &str,
) -> Result<String, PolicyError> {
    match map.remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(invalid(where_, field, &format!("{other} is not a string"))),
        None => Err(invalid(where_, field, "missing")),
    }
}

fn typed<T: DeserializeOwned>(value: Value, object: &str) -> Result<T, PolicyError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        PolicyError::Invalid {
            object: object.to_string(),
            path,
            message: e.into_inner().to_string(),
        }
    })
}

fn field_error(object: &str, e: FieldError) -> PolicyError {
    PolicyError::Invalid {
        object: object.to_string(),
        path: e.path,
        message: e.message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        parse_policies(text).unwrap_err().to_string()
    }

    const ALLOW_WEB: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-web
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions:
        - {key: ns, operator: In, values: [y, z]}
      podSelector: {}
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
    ports:
    - port: 80
    - protocol: UDP
      port: serve-81-udp
    - port: 1000
      endPort: 2000
"#;

    #[test]
    fn reads_a_network_policy_with_every_field() {
        let policies = parse_policies(ALLOW_WEB).unwrap();
        let [Policy::Network(p)] = policies.as_slice() else {
            panic!("{policies:?}")
        };
        assert_eq!(p.metadata.namespace.as_deref(), Some("x"));
        let rule = &p.spec.ingress[0];
        assert!(rule.from[0].namespace_selector.is_some() && rule.from[0].pod_selector.is_some());
        assert_eq!(rule.from[1].ip_block.as_ref().unwrap().except.len(), 1);
        assert_eq!(rule.ports[0].protocol(), Protocol::Tcp);
        assert_eq!(
            rule.ports[1].port,
            Some(PortRef::Name("serve-81-udp".into()))
        );
        assert_eq!(rule.ports[2].end_port, Some(2000));
        assert!(p.spec.isolates(PolicyType::Ingress));
        assert!(!p.spec.isolates(PolicyType::Egress));
    }

    #[test]
    fn round_trips_through_its_json_form() {
        let policies = parse_policies(ALLOW_WEB).unwrap();
        let json = policies[0].to_json();
        assert_eq!(policy_from_value(json, "stored").unwrap(), policies[0]);
    }

    #[test]
    fn several_documents_lists_and_json() {
        let text = format!(
            "{ALLOW_WEB}\n---\n{}\n---\n",
            ALLOW_WEB.replace("allow-web", "second")
        );
        assert_eq!(parse_policies(&text).unwrap().len(), 2);
        let list = r#"
apiVersion: v1
kind: List
items:
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: deny, uid: 1234, resourceVersion: "9", creationTimestamp: null}
  spec: {podSelector: {}}
  status: {}
"#;
        let from_list = parse_policies(list).unwrap();
        assert_eq!(
            from_list[0].key(),
            PolicyKey::Network {
                namespace: "default".into(),
                name: "deny".into()
            }
        );
        let json = r#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"a"},"spec":{"podSelector":{}}}
{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"b"},"spec":{"podSelector":{}}}"#;
        assert_eq!(parse_policies(json).unwrap().len(), 2);
        let array = format!("[{}]", json.replace('\n', ","));
        assert_eq!(parse_policies(&array).unwrap().len(), 2);
    }

    #[test]
    fn reads_admin_policies() {
        let text = r#"
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: cluster-control}
spec:
  priority: 10
  subject:
    namespaces: {matchLabels: {ns: x}}
  ingress:
  - name: deny-from-y
    action: Deny
    from:
    - namespaces: {matchLabels: {ns: y}}
    ports:
    - portNumber: {protocol: TCP, port: 80}
    - namedPort: serve-81-tcp
    - portRange: {start: 1000, end: 2000, protocol: UDP}
  egress:
  - action: Pass
    to:
    - pods:
        namespaceSelector: {}
        podSelector: {matchLabels: {pod: b}}
    - networks: [192.0.2.0/24, "2001:db8::/64"]
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  ingress:
  - action: Deny
    from: [{namespaces: {}}]
"#;
        let policies = parse_policies(text).unwrap();
        let Policy::Admin(anp) = &policies[0] else {
            panic!()
        };
        assert_eq!(anp.spec.priority, 10);
        assert_eq!(anp.spec.egress[0].action, AdminAction::Pass);
        assert!(matches!(policies[1], Policy::Baseline(_)));
    }

    #[test]
    fn errors_name_the_field_and_value() {
        let bad_end = ALLOW_WEB.replace(
            "port: 1000\n      endPort: 2000",
            "port: 80\n      endPort: 70",
        );
        assert_eq!(
            error_of(&bad_end),
            "NetworkPolicy x/allow-web: spec.ingress[0].ports[2].endPort: 70 is below port 80"
        );
        let no_port = ALLOW_WEB.replace("port: 1000\n      endPort: 2000", "endPort: 70");
        assert!(error_of(&no_port)
            .contains("spec.ingress[0].ports[2].endPort: 70 needs a numeric port"));
        let named = ALLOW_WEB.replace(
            "port: 1000\n      endPort: 2000",
            "port: http\n      endPort: 70",
        );
        assert!(error_of(&named).contains("not the named port \"http\""));
        let cidr = ALLOW_WEB.replace("10.0.0.0/8,", "10.0.0.0/33,");
        assert!(
            error_of(&cidr)
                .contains("spec.ingress[0].from[1].ipBlock.cidr: \"10.0.0.0/33\" is not a CIDR"),
            "{}",
            error_of(&cidr)
        );
        let except = ALLOW_WEB.replace("10.1.0.0/16", "11.0.0.0/16");
        assert!(error_of(&except)
            .contains("ipBlock.except[0]: 11.0.0.0/16 is not strictly inside cidr 10.0.0.0/8"));
        let op = ALLOW_WEB.replace("operator: In", "operator: Equals");
        let msg = error_of(&op);
        assert!(
            msg.contains("matchExpressions[0].operator") && msg.contains("Equals"),
            "{msg}"
        );
        let unknown = ALLOW_WEB.replace(
            "podSelector:\n    matchLabels",
            "podSelectr:\n    matchLabels",
        );
        let msg = error_of(&unknown);
        assert!(msg.contains("unknown field `podSelectr`"), "{msg}");
        let unknown_deep = ALLOW_WEB.replace("- port: 80\n", "- port: 80\n      portt: 1\n");
        let msg = error_of(&unknown_deep);
        assert!(
            msg.contains("spec.ingress[0].ports[0]") && msg.contains("`portt`"),
            "{msg}"
        );
        let both = ALLOW_WEB.replace("    - ipBlock:", "    - podSelector: {}\n      ipBlock:");
        assert!(error_of(&both).contains("from[1]: ipBlock cannot be combined"));
        let v6 = ALLOW_WEB.replace(
            "10.0.0.0/8, except: [10.1.0.0/16]",
            "\"fd00::/48\", except: [\"fd00:0:0:1::/64\"]",
        );
        assert!(parse_policies(&v6).is_ok(), "{}", error_of(&v6));
        let mixed = ALLOW_WEB.replace("except: [10.1.0.0/16]", "except: [\"fd00::/64\"]");
        assert!(error_of(&mixed).contains("not strictly inside"));
    }

    #[test]
    fn admin_errors() {
        let anp = |spec: &str| {
            format!("apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {{name: a}}\nspec:\n{spec}")
        };
        let msg = error_of(&anp("  priority: 1001\n  subject: {namespaces: {}}\n"));
        assert_eq!(
            msg,
            "AdminNetworkPolicy a: spec.priority: 1001 is out of range (0-1000)"
        );
        let msg = error_of(&anp("  priority: 1\n  subject: {}\n"));
        assert!(
            msg.contains("spec.subject: needs exactly one of namespaces or pods"),
            "{msg}"
        );
        let msg = error_of(&anp(
            "  priority: 1\n  subject: {namespaces: {}}\n  ingress:\n  - {action: Drop, from: [{namespaces: {}}]}\n",
        ));
        assert!(
            msg.contains("spec.ingress[0].action") && msg.contains("Drop"),
            "{msg}"
        );
        let msg = error_of(&anp(
            "  priority: 1\n  subject: {namespaces: {}}\n  egress:\n  - {action: Allow, to: []}\n",
        ));
        assert!(
            msg.contains("spec.egress[0].to: needs at least one entry"),
            "{msg}"
        );
        let msg = error_of(&anp(
            "  priority: 1\n  subject: {namespaces: {}}\n  egress:\n  - {action: Allow, to: [{nodes: {}}]}\n",
        ));
        assert!(
            msg.contains("spec.egress[0].to[0].nodes: node peers are not supported"),
            "{msg}"
        );
        let msg = error_of(&anp(
            "  priority: 1\n  subject: {namespaces: {}}\n  egress:\n  - {action: Allow, to: [{networks: [1.2.3.0/24]}], ports: [{portRange: {start: 9, end: 8}}]}\n",
        ));
        assert!(
            msg.contains("spec.egress[0].ports[0].portRange.end: 8 is below start 9"),
            "{msg}"
        );
        let with_ns = anp("  priority: 1\n  subject: {namespaces: {}}\n")
            .replace("{name: a}", "{name: a, namespace: x}");
        assert!(error_of(&with_ns).contains("cluster-scoped"));
        let banp = "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\nmetadata: {name: other}\nspec: {subject: {namespaces: {}}}\n";
        assert!(error_of(banp).contains("must be named \"default\""));
        let pass = banp.replace("{name: other}", "{name: default}").replace(
            "{subject: {namespaces: {}}}",
            "{subject: {namespaces: {}}, ingress: [{action: Pass, from: [{namespaces: {}}]}]}",
        );
        assert!(error_of(&pass).contains("Pass"));
    }

    #[test]
    fn kind_and_version_are_checked() {
        assert!(error_of("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n")
            .contains("not a policy kind"));
        assert!(error_of("apiVersion: networking.k8s.io/v1beta1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {}}\n")
            .contains("NetworkPolicy is networking.k8s.io/v1"));
        assert!(error_of("kind: NetworkPolicy\n").contains("apiVersion: missing"));
        assert!(error_of("a: [1, 2\n").starts_with("YAML"));
        assert!(error_of("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {}\n")
            .contains("missing field `podSelector`"));
        assert!(error_of("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: A_b}\nspec: {podSelector: {}}\n")
            .contains("metadata.name: \"A_b\" is not a valid name"));
        // Nulls mean absent, as in Kubernetes' YAML.
        let nulls = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec:\n  podSelector: {}\n  ingress:\n  - from:\n    ports:\n";
        let p = parse_policies(nulls).unwrap();
        let Policy::Network(p) = &p[0] else { panic!() };
        assert!(p.spec.ingress[0].from.is_empty());
    }

    /// A small deterministic fuzz pass: mutated documents never panic, and whatever still
    /// parses survives its stored form unchanged (what is stored is what was checked).
    #[test]
    fn mutated_documents_never_panic_and_round_trip() {
        let seed = format!("{ALLOW_WEB}---\n{}", ADMIN_SAMPLE);
        let alphabet = b" \n-:{}[],'\"#&*!|>0123456789abxyz/.";
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |bound: usize| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as usize) % bound.max(1)
        };
        let mut parsed = 0;
        for _ in 0..1500 {
            let mut bytes = seed.clone().into_bytes();
            for _ in 0..1 + next(4) {
                let at = next(bytes.len());
                match next(3) {
                    0 => {
                        bytes.remove(at);
                    }
                    1 => bytes.insert(at, alphabet[next(alphabet.len())]),
                    _ => bytes[at] = alphabet[next(alphabet.len())],
                }
            }
            let Ok(text) = String::from_utf8(bytes) else {
                continue;
            };
            if let Ok(policies) = parse_policies(&text) {
                parsed += 1;
                for p in policies {
                    assert_eq!(
                        policy_from_value(p.to_json(), "stored").unwrap(),
                        p,
                        "{text}"
                    );
                }
            }
        }
        assert!(parsed > 0, "no mutant parsed: the pass tested nothing");
    }

    const ADMIN_SAMPLE: &str = r#"apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: sample}
spec:
  priority: 10
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {pod: a}}}}
  egress:
  - {action: Deny, to: [{networks: [10.0.0.0/8]}], ports: [{portRange: {start: 1, end: 9}}]}
"#;
}
