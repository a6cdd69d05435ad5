//! The images of `e2e/images.sh` and the manifests that tests deploy.

/// The reference of one of the images that `e2e/images.sh` builds (`ktx.local/NAME:dev`).
pub fn image(name: &str) -> String {
    let prefix = std::env::var("KTX_E2E_IMAGE_PREFIX").unwrap_or_else(|_| "ktx.local/".to_owned());
    let tag = std::env::var("KTX_E2E_IMAGE_TAG").unwrap_or_else(|_| "dev".to_owned());
    format!("{prefix}{name}:{tag}")
}

/// The image of the test backend.
pub fn testbackend_image() -> String {
    std::env::var("KTX_E2E_TESTBACKEND_IMAGE").unwrap_or_else(|_| image("ktx-testbackend"))
}

/// A YAML double-quoted string.
pub fn yaml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Deployment + Service of the test backend: `replicas` pods answering with `backend_name`,
/// Service `name` port 8080.
pub fn testbackend_manifest(name: &str, backend_name: &str, replicas: u32) -> String {
    backend_manifest(name, backend_name, replicas, 8080, false)
}

/// Service `name` with two ports: `http` (80 → container port `http`, the test backend) and
/// `raw` (9001 → container port `raw` 9000: raw TCP, a banner with `backend_name`, then echo).
pub fn two_port_manifest(name: &str, backend_name: &str) -> String {
    backend_manifest(name, backend_name, 1, 80, true)
}

/// The test backend's Deployment and Service: Service port `http_port` → container port `http`
/// (8080), and with `raw`, Service port 9001 → container port `raw` (9000, raw TCP echo).
fn backend_manifest(
    name: &str,
    backend_name: &str,
    replicas: u32,
    http_port: u16,
    raw: bool,
) -> String {
    let image = testbackend_image();
    let backend_name = yaml_string(backend_name);
    let (raw_arg, raw_container_port, raw_service_port) = if raw {
        (
            r#""--tcp-listen", "0.0.0.0:9000", "#,
            "\n        - name: raw\n          containerPort: 9000",
            "\n  - name: raw\n    port: 9001\n    targetPort: raw",
        )
    } else {
        ("", "", "")
    };
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels:
    app.kubernetes.io/created-by: ktx-e2e
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
        app.kubernetes.io/created-by: ktx-e2e
    spec:
      terminationGracePeriodSeconds: 2
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
      containers:
      - name: backend
        image: {image}
        imagePullPolicy: IfNotPresent
        args: ["--listen", "0.0.0.0:8080", {raw_arg}"--name", {backend_name}]
        ports:
        - name: http
          containerPort: 8080{raw_container_port}
        readinessProbe:
          tcpSocket:
            port: 8080
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  labels:
    app.kubernetes.io/created-by: ktx-e2e
spec:
  selector:
    app: {name}
  ports:
  - name: http
    port: {http_port}
    targetPort: http{raw_service_port}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_strings_are_quoted() {
        assert_eq!(yaml_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
