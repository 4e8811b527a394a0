package natsperms

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKubernetesUsesThePermissions checks that the Kubernetes manifests
// run NATS with the permissions this package tests and give every
// component its own user: kustomize loads files only from its folder, so
// deploy/kubernetes holds a copy of deploy/nats/permissions.conf (make
// deploy-sync), which must stay identical.
func TestKubernetesUsesThePermissions(t *testing.T) {
	read := func(parts ...string) string {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(append([]string{"..", "..", "deploy"}, parts...)...))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	if a, b := read("nats", "permissions.conf"), read("kubernetes", "nats-permissions.conf"); !bytes.Equal([]byte(a), []byte(b)) {
		t.Fatal("deploy/kubernetes/nats-permissions.conf differs from deploy/nats/permissions.conf: run make deploy-sync")
	}
	kustomization := read("kubernetes", "kustomization.yaml")
	if !strings.Contains(kustomization, "permissions.conf=nats-permissions.conf") {
		t.Error("kustomization.yaml does not generate the nats-permissions ConfigMap")
	}
	natsYAML := read("kubernetes", "nats.yaml")
	for _, want := range []string{"include ./permissions.conf", "configMap: {name: nats-permissions}"} {
		if !strings.Contains(natsYAML, want) {
			t.Errorf("nats.yaml lacks %q", want)
		}
	}
	for _, u := range users {
		want := "- name: PUSHPROXY_NATS_" + strings.ToUpper(u) + "_PASSWORD\n              valueFrom:\n                secretKeyRef: {name: pushproxy-nats-users, key: " + u + "}"
		if !strings.Contains(natsYAML, want) {
			t.Errorf("nats.yaml does not set the password of user %s from the Secret", u)
		}
	}
	for file, user := range map[string]string{"ingest.yaml": "ingest", "dispatcher.yaml": "dispatcher", "monitor.yaml": "monitor", "provision-job.yaml": "admin"} {
		want := "- name: PUSHPROXY_NATS_USER\n            value: " + user + "\n            - name: PUSHPROXY_NATS_PASSWORD\n              valueFrom:\n                secretKeyRef: {name: pushproxy-nats-users, key: " + user + "}"
		if !strings.Contains(read("kubernetes", file), strings.ReplaceAll(want, "\n            value", "\n              value")) {
			t.Errorf("%s does not connect as NATS user %s with its password from the Secret", file, user)
		}
	}
}
