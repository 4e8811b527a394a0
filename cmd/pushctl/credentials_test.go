package main

import (
	"regexp"
	"strings"
	"testing"
)

var secretLine = regexp.MustCompile(`(?m)^Secret +: (\S+)$`)
var idLine = regexp.MustCompile(`(?m)^Id +: ([0-9a-f]+)$`)

func TestCredentialsCommands(t *testing.T) {
	_, url := startNATS(t)
	r := pushctl(t, "credentials", "create", "--tenant", "fabrikam.com", "--role", "events,read", "--description", "mail-1", url)
	secret, id := secretLine.FindStringSubmatch(r.stdout), idLine.FindStringSubmatch(r.stdout)
	if r.code != 0 || secret == nil || id == nil || !strings.HasPrefix(secret[1], "ppk_"+id[1]+".") {
		t.Fatalf("create: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = pushctl(t, "credentials", "list", url)
	if r.code != 0 || !strings.Contains(r.stdout, id[1]) || !strings.Contains(r.stdout, "events,read") || strings.Contains(r.stdout, secret[1]) {
		t.Fatalf("list: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = pushctl(t, "credentials", "rotate", id[1], url)
	fresh := secretLine.FindStringSubmatch(r.stdout)
	if r.code != 0 || fresh == nil || fresh[1] == secret[1] {
		t.Fatalf("rotate: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := pushctl(t, "credentials", "revoke", id[1], url); r.code != 0 {
		t.Fatalf("revoke: %d %s", r.code, r.stderr)
	}
	if r := pushctl(t, "credentials", "list", url); strings.Contains(r.stdout, id[1]) {
		t.Fatalf("revoked credential still listed:\n%s", r.stdout)
	}

	r = pushctl(t, "credentials", "create", "--kind", "graph", "--tenant", "fabrikam.com", url)
	if graph := secretLine.FindStringSubmatch(r.stdout); r.code != 0 || graph == nil || !strings.Contains(r.stdout, "events") || len(graph[1]) > 128 {
		t.Fatalf("create --kind graph (a clientState of at most 128 characters, role events): %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"graph with another role", []string{"credentials", "create", "--kind", "graph", "--tenant", "fabrikam.com", "--role", "admin", url}, 1, "only post events"},
		{"no role", []string{"credentials", "create", "--tenant", "fabrikam.com", url}, 2, "--role are required"},
		{"unknown role", []string{"credentials", "create", "--tenant", "fabrikam.com", "--role", "root", url}, 2, "unknown role"},
		{"bad tenant", []string{"credentials", "create", "--tenant", "not a domain", "--role", "events", url}, 1, "tenant"},
		{"basic without user", []string{"credentials", "create", "--kind", "basic", "--tenant", "fabrikam.com", "--role", "events", url}, 1, "user name"},
		{"revoke unknown", []string{"credentials", "revoke", "feedfacecafe", url}, 1, "no such credential"},
		{"rotate without id", []string{"credentials", "rotate", url}, 2, "credential id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			oneLineError(t, pushctl(t, tt.args...), tt.code, tt.want)
		})
	}
}
