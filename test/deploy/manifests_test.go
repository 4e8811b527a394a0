// Package deploy checks the Kubernetes manifests of deploy/kubernetes
// without a cluster: every document decodes strictly (no unknown or
// misspelt field, no wrong type) into its typed Kubernetes API object, and
// the kustomization names files that exist. It is a module of its own so
// that the Kubernetes API types stay out of pushproxy's dependencies; make
// test runs it.
package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// manifests is where the Kubernetes manifests are.
var manifests = filepath.Join("..", "..", "deploy", "kubernetes")

// objectFor returns an empty typed object for a document's apiVersion and
// kind, or nil for a kind the deployment does not use.
func objectFor(apiVersion, kind string) any {
	switch apiVersion + " " + kind {
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}
	case "v1 Service":
		return &corev1.Service{}
	case "v1 Namespace":
		return &corev1.Namespace{}
	case "v1 Secret":
		return &corev1.Secret{}
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}
	case "apps/v1 StatefulSet":
		return &appsv1.StatefulSet{}
	case "batch/v1 Job":
		return &batchv1.Job{}
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "networking.k8s.io/v1 NetworkPolicy":
		return &networkingv1.NetworkPolicy{}
	}
	return nil
}

// documents splits a YAML file into its documents.
func documents(data []byte) [][]byte {
	var out [][]byte
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(doc, "")) != "" {
			out = append(out, []byte(doc))
		}
	}
	return out
}

// decodeStrict decodes a YAML document into obj, refusing unknown fields.
func decodeStrict(doc []byte, obj any) error {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	return dec.Decode(obj)
}

func TestManifestsDecodeStrictly(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(manifests, "*.yaml"))
	if err != nil || len(files) < 5 {
		t.Fatalf("manifests %v: %v", files, err)
	}
	kinds := map[string]int{}
	for _, file := range files {
		if filepath.Base(file) == "kustomization.yaml" {
			continue
		}
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range documents(data) {
			where := fmt.Sprintf("%s document %d", filepath.Base(file), i+1)
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
				Metadata   struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if err := yaml.Unmarshal(doc, &head); err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			obj := objectFor(head.APIVersion, head.Kind)
			if obj == nil {
				t.Errorf("%s: %s %s is not a kind this test knows; add it", where, head.APIVersion, head.Kind)
				continue
			}
			if err := decodeStrict(doc, obj); err != nil {
				t.Errorf("%s (%s %s): %v", where, head.Kind, head.Metadata.Name, err)
			}
			kinds[head.Kind]++
		}
	}
	for _, want := range []string{"Deployment", "StatefulSet", "Job", "Service", "ConfigMap"} {
		if kinds[want] == 0 {
			t.Errorf("no %s decoded; the manifests or this test changed", want)
		}
	}
}

// decodedObjects decodes every document of the manifests into its typed
// object.
func decodedObjects(t *testing.T) []any {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(manifests, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var out []any
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range documents(data) {
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if yaml.Unmarshal(doc, &head) != nil {
				continue
			}
			if obj := objectFor(head.APIVersion, head.Kind); obj != nil && decodeStrict(doc, obj) == nil {
				out = append(out, obj)
			}
		}
	}
	return out
}

// TestEveryNATSIsClosed checks each NATS server of the manifests: its
// configuration names users (no anonymous client), and a NetworkPolicy
// of its namespace selects its pods and limits who reaches the clients
// port. The relay's NATS holds the partners whose certificates the relay
// trusts; the organizations' NATS holds every badge and device.
func TestEveryNATSIsClosed(t *testing.T) {
	objects := decodedObjects(t)
	configs := map[string]string{} // namespace/name of a ConfigMap -> its nats.conf
	var policies []*networkingv1.NetworkPolicy
	for _, o := range objects {
		switch o := o.(type) {
		case *corev1.ConfigMap:
			if conf, ok := o.Data["nats.conf"]; ok {
				configs[o.Namespace+"/"+o.Name] = conf
			}
		case *networkingv1.NetworkPolicy:
			policies = append(policies, o)
		}
	}
	servers := 0
	for _, o := range objects {
		set, ok := o.(*appsv1.StatefulSet)
		if !ok || len(set.Spec.Template.Spec.Containers) == 0 || !strings.Contains(strings.Join(set.Spec.Template.Spec.Containers[0].Command, " "), "nats-server") {
			continue
		}
		servers++
		name := set.Namespace + "/" + set.Name
		closed := false
		for _, v := range set.Spec.Template.Spec.Volumes {
			var names []string
			if v.ConfigMap != nil {
				names = append(names, v.ConfigMap.Name)
			}
			if v.Projected != nil {
				for _, src := range v.Projected.Sources {
					if src.ConfigMap != nil {
						names = append(names, src.ConfigMap.Name)
					}
				}
			}
			for _, n := range names {
				conf := configs[set.Namespace+"/"+n]
				closed = closed || strings.Contains(conf, "authorization") || strings.Contains(conf, "include ./permissions.conf")
			}
		}
		if !closed {
			t.Errorf("NATS %s: its configuration names no users; any pod could connect", name)
		}
		if !coveredByPolicy(set, policies) {
			t.Errorf("NATS %s: no NetworkPolicy of its namespace selects its pods and limits its clients port 4222", name)
		}
	}
	if servers < 2 {
		t.Fatalf("%d NATS servers found, want the organizations' and the relay's", servers)
	}
}

// coveredByPolicy reports whether a NetworkPolicy in set's namespace
// selects its pods and allows port 4222 only from selected pods.
func coveredByPolicy(set *appsv1.StatefulSet, policies []*networkingv1.NetworkPolicy) bool {
	labels := set.Spec.Template.Labels
	for _, p := range policies {
		if p.Namespace != set.Namespace || len(p.Spec.PodSelector.MatchLabels) == 0 {
			continue
		}
		selects := true
		for k, v := range p.Spec.PodSelector.MatchLabels {
			selects = selects && labels[k] == v
		}
		if !selects {
			continue
		}
		limited := false
		for _, rule := range p.Spec.Ingress {
			for _, port := range rule.Ports {
				if port.Port != nil && port.Port.IntValue() == 4222 {
					limited = len(rule.From) > 0
					for _, peer := range rule.From {
						limited = limited && peer.IPBlock == nil && peer.NamespaceSelector == nil
					}
				}
			}
		}
		if limited {
			return true
		}
	}
	return false
}

// TestKustomizationNamesFilesThatExist checks the resources and generated
// files of kustomization.yaml, which kustomize loads only from its folder.
func TestKustomizationNamesFilesThatExist(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(manifests, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources          []string `json:"resources"`
		ConfigMapGenerator []struct {
			Files []string `json:"files"`
		} `json:"configMapGenerator"`
	}
	if err := yaml.Unmarshal(data, &k); err != nil {
		t.Fatal(err)
	}
	paths := k.Resources
	for _, g := range k.ConfigMapGenerator {
		for _, f := range g.Files {
			_, file, _ := strings.Cut(f, "=")
			if file == "" {
				file = f
			}
			paths = append(paths, file)
		}
	}
	if len(paths) < 5 {
		t.Fatalf("kustomization names only %v", paths)
	}
	for _, p := range paths {
		if strings.Contains(p, "..") || filepath.IsAbs(p) {
			t.Errorf("%s is outside the kustomization folder: kustomize refuses it", p)
			continue
		}
		if _, err := os.Stat(filepath.Join(manifests, p)); err != nil {
			t.Errorf("kustomization names %s: %v", p, err)
		}
	}
}

// TestDockerfileBuilds builds the image of deploy/Dockerfile where Docker
// exists; elsewhere it says so and skips.
func TestDockerfileBuilds(t *testing.T) {
	docker, err := exec.LookPath("docker")
	if err != nil {
		t.Skip("docker is not installed here: deploy/Dockerfile is not built")
	}
	if err := exec.Command(docker, "info").Run(); err != nil {
		t.Skipf("docker does not answer (%v): deploy/Dockerfile is not built", err)
	}
	root := filepath.Join("..", "..")
	cmd := exec.Command(docker, "build", "-f", filepath.Join(root, "deploy", "Dockerfile"), "-t", "pushproxy:test", root)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
}
