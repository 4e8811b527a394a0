package dovecot_test

// This file checks the shipped Dovecot configuration files without running
// Dovecot: deploy/dovecot/95-pushproxy.conf (Dovecot 2.3, which
// TestDovecotIntegration also runs for real) and
// deploy/dovecot/95-pushproxy-2.4.conf (Dovecot 2.4, which no test here can
// run: Debian 12 packages 2.3.19). It needs neither root nor Dovecot and
// always runs.
//
// The files are read with a small tokenizer of Dovecot's configuration
// syntax written below, so that a misplaced brace, a 2.3 setting name left
// in the 2.4 file, a driver numbering gap or a drift between the two files'
// URLs and placeholders fails here rather than on an operator's server.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// Dovecot configuration tokenizer -------------------------------------------
//
// Dovecot's configuration is line based. This tokenizer understands the
// forms that the shipped files and Dovecot's own example files use:
//
//	# comment                 a whole line; a # inside a value is kept
//	key = value               the value runs to the end of the line, trimmed
//	key = "quoted value"      backslash escapes \" and \\ inside quotes
//	name {                    a section (2.4: a named filter), e.g. plugin,
//	                          mail_plugins, lua_settings
//	name arg {                a section with an argument (2.4: a named list
//	                          filter), e.g. protocol imap, push_notification
//	                          lua; the argument may be quoted
//	}                         closes the innermost section
//	!include path             also !include_try
//
// Braces inside a value (%{home}) are part of the value and do not open or
// close anything, as in Dovecot. Anything else is an error, as are a } with
// no open section and a section still open at the end of the file.

type confKind int

const (
	confSetting confKind = iota // key = value
	confSection                 // name [arg] { ... }
	confInclude                 // !include path, !include_try path
)

// confNode is one setting, section or include of a configuration file.
type confNode struct {
	kind     confKind
	key      string // setting key, section name, or "!include" / "!include_try"
	arg      string // section argument ("" when none)
	value    string // setting value (unquoted), or the included path
	line     int    // 1-based line number, for messages
	children []*confNode
}

// confKeyRe matches setting keys and section names: letters, digits, _ and -,
// with / and . for the path-like keys that Dovecot also accepts.
var confKeyRe = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_./-]*$`)

// parseDovecotConf tokenizes text into a tree of nodes.
func parseDovecotConf(text string) ([]*confNode, error) {
	root := &confNode{kind: confSection}
	stack := []*confNode{root}
	for i, raw := range strings.Split(text, "\n") {
		line := strings.TrimSpace(raw)
		n := i + 1
		top := stack[len(stack)-1]
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case line == "}":
			if len(stack) == 1 {
				return nil, fmt.Errorf("line %d: unexpected } with no section open", n)
			}
			stack = stack[:len(stack)-1]
			continue
		case strings.HasPrefix(line, "!"):
			directive, path, _ := strings.Cut(line, " ")
			if directive != "!include" && directive != "!include_try" {
				return nil, fmt.Errorf("line %d: unknown directive %q", n, directive)
			}
			path, err := confValue(strings.TrimSpace(path))
			if err != nil || path == "" {
				return nil, fmt.Errorf("line %d: %s needs a path (%v)", n, directive, err)
			}
			top.children = append(top.children, &confNode{kind: confInclude, key: directive, value: path, line: n})
			continue
		}

		// The first word is a key or a section name.
		end := strings.IndexAny(line, " \t={}\"")
		if end < 0 {
			end = len(line)
		}
		key, rest := line[:end], strings.TrimSpace(line[end:])
		if !confKeyRe.MatchString(key) {
			return nil, fmt.Errorf("line %d: %q does not start with a setting or section name", n, line)
		}
		switch {
		case strings.HasPrefix(rest, "="):
			value, err := confValue(strings.TrimSpace(rest[1:]))
			if err != nil {
				return nil, fmt.Errorf("line %d: %v", n, err)
			}
			top.children = append(top.children, &confNode{kind: confSetting, key: key, value: value, line: n})
		case strings.HasSuffix(rest, "{"):
			arg, err := confValue(strings.TrimSpace(strings.TrimSuffix(rest, "{")))
			if err != nil {
				return nil, fmt.Errorf("line %d: %v", n, err)
			}
			if strings.ContainsAny(arg, " \t") && !strings.HasPrefix(strings.TrimSpace(rest), `"`) {
				return nil, fmt.Errorf("line %d: a section takes one name and at most one argument: %q", n, line)
			}
			section := &confNode{kind: confSection, key: key, arg: arg, line: n}
			top.children = append(top.children, section)
			stack = append(stack, section)
		default:
			return nil, fmt.Errorf("line %d: %q is neither key = value nor a section opening with {", n, line)
		}
	}
	if len(stack) > 1 {
		open := stack[len(stack)-1]
		return nil, fmt.Errorf("section %q opened at line %d is not closed", strings.TrimSpace(open.key+" "+open.arg), open.line)
	}
	return root.children, nil
}

// confValue unquotes a value written in double quotes and returns any other
// value as it is.
func confValue(s string) (string, error) {
	if !strings.HasPrefix(s, `"`) {
		return s, nil
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			if i+1 == len(s) {
				return "", fmt.Errorf("unterminated quoted string %s", s)
			}
			i++
			b.WriteByte(s[i])
		case '"':
			if strings.TrimSpace(s[i+1:]) != "" {
				return "", fmt.Errorf("text after the closing quote in %s", s)
			}
			return b.String(), nil
		default:
			b.WriteByte(c)
		}
	}
	return "", fmt.Errorf("unterminated quoted string %s", s)
}

// confWalk calls visit for every node, with the sections enclosing it.
func confWalk(nodes []*confNode, visit func(parents []*confNode, n *confNode)) {
	var walk func(parents []*confNode, nodes []*confNode)
	walk = func(parents []*confNode, nodes []*confNode) {
		for _, n := range nodes {
			visit(parents, n)
			if n.kind == confSection {
				walk(append(parents[:len(parents):len(parents)], n), n.children)
			}
		}
	}
	walk(nil, nodes)
}

// confSections returns the sections directly in nodes named name.
func confSections(nodes []*confNode, name string) []*confNode {
	var out []*confNode
	for _, n := range nodes {
		if n.kind == confSection && n.key == name {
			out = append(out, n)
		}
	}
	return out
}

// confGet returns the value of the setting key directly in nodes.
func confGet(nodes []*confNode, key string) (string, bool) {
	for _, n := range nodes {
		if n.kind == confSetting && n.key == key {
			return n.value, true
		}
	}
	return "", false
}

// confStrings returns the settings directly in nodes as a map.
func confStrings(nodes []*confNode) map[string]string {
	out := map[string]string{}
	for _, n := range nodes {
		if n.kind == confSetting {
			out[n.key] = n.value
		}
	}
	return out
}

// confDump writes nodes compactly (for the tokenizer's own test).
func confDump(nodes []*confNode) string {
	var parts []string
	for _, n := range nodes {
		switch n.kind {
		case confSetting:
			parts = append(parts, fmt.Sprintf("%s=%q", n.key, n.value))
		case confInclude:
			parts = append(parts, n.key+" "+n.value)
		case confSection:
			head := n.key
			if n.arg != "" {
				head += fmt.Sprintf(" %q", n.arg)
			}
			parts = append(parts, head+" {"+confDump(n.children)+"}")
		}
	}
	return strings.Join(parts, "; ")
}

// confCommentedOut returns the commented-out configuration of text, one
// string per run of consecutive commented-out lines. Dovecot's example
// files comment out a setting or a section with a # right before the text
// ("#key = value", "#service doveadm {"), and the lines inside such a
// section keep their indentation after the # ("#  port = 8080"); prose
// comments have "# " with a space. A run therefore starts at a "#" directly
// followed by text and goes on while its lines are like that or a
// commented-out section is still open. The # is removed so that the run can
// be tokenized like live configuration.
func confCommentedOut(text string) []string {
	var runs []string
	var run []string
	depth := 0
	flush := func() {
		if len(run) > 0 {
			runs = append(runs, strings.Join(run, "\n"))
			run, depth = nil, 0
		}
	}
	for _, raw := range strings.Split(text, "\n") {
		line := strings.TrimSpace(raw)
		code, commented := strings.CutPrefix(line, "#")
		starts := commented && code != "" && code[0] != ' ' && code[0] != '\t' && code[0] != '#'
		if !starts && !(commented && depth > 0) {
			flush()
			continue
		}
		run = append(run, code)
		switch code = strings.TrimSpace(code); {
		case strings.HasSuffix(code, "{"):
			depth++
		case code == "}":
			depth--
		}
	}
	flush()
	return runs
}

// Edits an operator makes -----------------------------------------------------
//
// Like dropLine in dovecot_test.go, these fail the test when the text they
// must change is missing, so that the shipped file and the test cannot
// drift apart.

// confWithoutLine removes the one line of s that starts with prefix (after
// its indentation).
func confWithoutLine(t *testing.T, s, prefix string) string {
	t.Helper()
	lines := strings.Split(s, "\n")
	at := confLineIndex(t, lines, prefix)
	return strings.Join(append(lines[:at:at], lines[at+1:]...), "\n")
}

// confRenameLine replaces prefix by with at the start of the one line of s
// that starts with prefix (after its indentation).
func confRenameLine(t *testing.T, s, prefix, with string) string {
	t.Helper()
	lines := strings.Split(s, "\n")
	at := confLineIndex(t, lines, prefix)
	indent := lines[at][:len(lines[at])-len(strings.TrimLeft(lines[at], " \t"))]
	lines[at] = indent + with + strings.TrimPrefix(strings.TrimSpace(lines[at]), prefix)
	return strings.Join(lines, "\n")
}

// confWithoutSection removes the section whose opening line is header (after
// its indentation), down to its closing brace.
func confWithoutSection(t *testing.T, s, header string) string {
	t.Helper()
	lines := strings.Split(s, "\n")
	start := confLineIndex(t, lines, header)
	depth := 0
	for i := start; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		switch {
		case strings.HasPrefix(line, "#"):
		case strings.HasSuffix(line, "{"):
			depth++
		case line == "}":
			depth--
		}
		if depth == 0 {
			return strings.Join(append(lines[:start:start], lines[i+1:]...), "\n")
		}
	}
	t.Fatalf("section %q is not closed", header)
	return s
}

func confLineIndex(t *testing.T, lines []string, prefix string) int {
	t.Helper()
	at := -1
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), prefix) {
			if at >= 0 {
				t.Fatalf("the shipped file has more than one line starting with %q", prefix)
			}
			at = i
		}
	}
	if at < 0 {
		t.Fatalf("the shipped file has no line starting with %q", prefix)
	}
	return at
}

// What each file configures -------------------------------------------------

// pushDriverKeyRe matches Dovecot 2.3's numbered driver keys:
// push_notification_driver, push_notification_driver2, ...
var pushDriverKeyRe = regexp.MustCompile(`^push_notification_driver([0-9]*)$`)

// confDrivers23 returns the kinds ("lua", "ox") of a 2.3 file's push
// notification drivers in Dovecot's order, and an error when the numbering
// has a gap: Dovecot 2.3 reads push_notification_driver, then
// push_notification_driver2, 3, ... and silently ignores everything after
// the first missing number.
func confDrivers23(nodes []*confNode) ([]string, error) {
	byNumber := map[int]string{}
	for _, plugin := range confSections(nodes, "plugin") {
		for _, n := range plugin.children {
			m := pushDriverKeyRe.FindStringSubmatch(n.key)
			if n.kind != confSetting || m == nil {
				continue
			}
			number := 1
			if m[1] != "" {
				if _, err := fmt.Sscan(m[1], &number); err != nil || number < 2 {
					return nil, fmt.Errorf("line %d: %s is not numbered as Dovecot reads it (driver, driver2, driver3, ...)", n.line, n.key)
				}
			}
			if _, dup := byNumber[number]; dup {
				return nil, fmt.Errorf("line %d: %s is set twice", n.line, n.key)
			}
			kind, _, _ := strings.Cut(n.value, ":")
			byNumber[number] = kind
		}
	}
	var kinds []string
	for i := 1; i <= len(byNumber); i++ {
		kind, ok := byNumber[i]
		if !ok {
			name := "push_notification_driver"
			if i > 1 {
				name += fmt.Sprint(i)
			}
			return nil, fmt.Errorf("%s is missing, so Dovecot ignores the drivers numbered after it", name)
		}
		kinds = append(kinds, kind)
	}
	return kinds, nil
}

// confDrivers24 returns the drivers of a 2.4 file's push_notification
// blocks in file order; each block must be named, uniquely, and name its
// driver.
func confDrivers24(nodes []*confNode) ([]string, error) {
	var kinds []string
	names := map[string]bool{}
	for _, block := range confSections(nodes, "push_notification") {
		if block.arg == "" || names[block.arg] {
			return nil, fmt.Errorf("line %d: each push_notification block needs a name of its own", block.line)
		}
		names[block.arg] = true
		driver, ok := confGet(block.children, "driver")
		if !ok {
			return nil, fmt.Errorf("line %d: push_notification %s does not name its driver", block.line, block.arg)
		}
		kinds = append(kinds, driver)
	}
	return kinds, nil
}

// pushproxyConf is what a shipped file tells Dovecot about pushproxy; the
// 2.3 and 2.4 files must agree on all of it.
type pushproxyConf struct {
	luaScript      string            // the Lua driver's script
	luaSettings    map[string]string // settings read by pushproxy.lua
	oxURL          string            // the OX driver's URL
	oxUserFromMeta bool              // the OX driver takes the user from METADATA
	plugins        []string          // mail plugins enabled, sorted
	attributeStore bool              // METADATA has a store
	imapMetadata   bool              // IMAP METADATA is on
}

func confPushproxy23(nodes []*confNode) pushproxyConf {
	var c pushproxyConf
	if v, ok := confGet(nodes, "mail_plugins"); ok {
		c.plugins = strings.Fields(strings.ReplaceAll(v, "$mail_plugins", ""))
	}
	if v, ok := confGet(nodes, "mail_attribute_dict"); ok {
		c.attributeStore = v != ""
	}
	for _, imap := range confSections(nodes, "protocol") {
		if v, _ := confGet(imap.children, "imap_metadata"); imap.arg == "imap" && v == "yes" {
			c.imapMetadata = true
		}
	}
	c.luaSettings = map[string]string{}
	for _, plugin := range confSections(nodes, "plugin") {
		for key, value := range confStrings(plugin.children) {
			switch {
			case strings.HasPrefix(key, "pushproxy_"):
				c.luaSettings[key] = value
			case pushDriverKeyRe.MatchString(key) && strings.HasPrefix(value, "lua:"):
				for _, option := range strings.Fields(strings.TrimPrefix(value, "lua:")) {
					if file, ok := strings.CutPrefix(option, "file="); ok {
						c.luaScript = file
					}
				}
			case pushDriverKeyRe.MatchString(key) && strings.HasPrefix(value, "ox:"):
				for _, option := range strings.Fields(strings.TrimPrefix(value, "ox:")) {
					if url, ok := strings.CutPrefix(option, "url="); ok {
						c.oxURL = url
					}
					c.oxUserFromMeta = c.oxUserFromMeta || option == "user_from_metadata"
				}
			}
		}
	}
	sort.Strings(c.plugins)
	return c
}

func confPushproxy24(nodes []*confNode) pushproxyConf {
	var c pushproxyConf
	for _, list := range confSections(nodes, "mail_plugins") {
		for key, value := range confStrings(list.children) {
			if value == "yes" {
				c.plugins = append(c.plugins, key)
			}
		}
	}
	for _, attr := range confSections(nodes, "mail_attribute") {
		for _, dict := range confSections(attr.children, "dict") {
			path, _ := confGet(dict.children, "path")
			c.attributeStore = dict.arg != "" && path != ""
		}
	}
	for _, imap := range confSections(nodes, "protocol") {
		if v, _ := confGet(imap.children, "imap_metadata"); imap.arg == "imap" && v == "yes" {
			c.imapMetadata = true
		}
	}
	c.luaSettings = map[string]string{}
	for _, block := range confSections(nodes, "push_notification") {
		switch driver, _ := confGet(block.children, "driver"); driver {
		case "lua":
			c.luaScript, _ = confGet(block.children, "lua_file")
			for _, settings := range confSections(block.children, "lua_settings") {
				for key, value := range confStrings(settings.children) {
					c.luaSettings[key] = value
				}
			}
		case "ox":
			c.oxURL, _ = confGet(block.children, "ox_url")
			v, _ := confGet(block.children, "ox_user_from_metadata")
			c.oxUserFromMeta = v == "yes"
		}
	}
	sort.Strings(c.plugins)
	return c
}

// The tests -------------------------------------------------------------------

// TestDovecotConfigTokenizer checks the tokenizer that the shipped files are
// read with, on the forms it must accept and the mistakes it must catch.
func TestDovecotConfigTokenizer(t *testing.T) {
	cases := []struct {
		name, text, want, wantErr string
	}{
		{name: "setting", text: "key = value with  spaces  ", want: `key="value with  spaces"`},
		{name: "empty value", text: "key =", want: `key=""`},
		{name: "comments and blank lines", text: "# a\n\n   # indented\nk = v\n", want: `k="v"`},
		{name: "quoted value keeps # and braces", text: `k = "a \"b\" # { } \\"`, want: `k="a \"b\" # { } \\"`},
		{name: "# inside a value is not a comment", text: "k = a#b", want: `k="a#b"`},
		{name: "braces inside a value", text: "path = %{home}/dovecot-attributes", want: `path="%{home}/dovecot-attributes"`},
		{name: "section", text: "mail_plugins {\n  notify = yes\n}", want: `mail_plugins {notify="yes"}`},
		{name: "section with argument", text: "protocol imap {\n imap_metadata = yes\n}", want: `protocol "imap" {imap_metadata="yes"}`},
		{name: "quoted argument", text: "namespace \"a b\" {\n}", want: `namespace "a b" {}`},
		{name: "nested", text: "a x {\n b {\n  c = d\n }\n e = f\n}\ng = h", want: `a "x" {b {c="d"}; e="f"}; g="h"`},
		{name: "includes", text: "!include conf.d/*.conf\n!include_try \"/etc/x.conf\"", want: `!include conf.d/*.conf; !include_try /etc/x.conf`},
		{name: "} without section", text: "k = v\n}", wantErr: "unexpected }"},
		{name: "section not closed", text: "a {\n b {\n }", wantErr: `"a" opened at line 1 is not closed`},
		{name: "unterminated quote", text: `k = "abc`, wantErr: "unterminated"},
		{name: "text after quote", text: `k = "abc" d`, wantErr: "after the closing quote"},
		{name: "not a setting", text: "just some words", wantErr: "neither key = value nor a section"},
		{name: "two arguments", text: "a b c {\n}", wantErr: "at most one argument"},
		{name: "unknown directive", text: "!exclude x", wantErr: "unknown directive"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			nodes, err := parseDovecotConf(c.text)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := confDump(nodes); got != c.want {
				t.Fatalf("got  %s\nwant %s", got, c.want)
			}
		})
	}
	if runs := confCommentedOut("# prose\n#a = b\n#s x {\n#  k = v\n#}\n# more prose\n#c = d"); len(runs) != 2 || runs[0] != "a = b\ns x {\n  k = v\n}" || runs[1] != "c = d" {
		t.Fatalf("commented-out runs %q", runs)
	}
}

// TestDovecotShippedConfigs reads both shipped configuration files, applies
// the edits their comments document for each way of running pushproxy (Lua
// alone, Lua and OX as shipped, OX alone), and checks that the result is
// well-formed, enables the documented drivers, and that the 2.3 and 2.4
// files agree on URLs, script path, settings and placeholders.
func TestDovecotShippedConfigs(t *testing.T) {
	deploy := filepath.Join("..", "..", "deploy", "dovecot")
	read := func(name string) string {
		data, err := os.ReadFile(filepath.Join(deploy, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	parse := func(t *testing.T, text string) []*confNode {
		t.Helper()
		nodes, err := parseDovecotConf(text)
		if err != nil {
			t.Fatal(err)
		}
		return nodes
	}
	files := map[string]string{"2.3": read("95-pushproxy.conf"), "2.4": read("95-pushproxy-2.4.conf")}

	t.Run("variants", func(t *testing.T) {
		drivers := map[string]func([]*confNode) ([]string, error){"2.3": confDrivers23, "2.4": confDrivers24}
		variants := []struct {
			version, name string
			// edit turns the shipped file into the variant, as the file's
			// comment tells an operator to (for 2.3 the same edits as
			// TestDovecotIntegration makes).
			edit func(t *testing.T, s string) string
			want []string // the drivers Dovecot then runs, in order
			// wantErr is set for a wrong edit that the check must catch.
			wantErr string
		}{
			{"2.3", "Lua and OX, as shipped", nil, []string{"lua", "ox"}, ""},
			{"2.3", "Lua alone", func(t *testing.T, s string) string {
				return confWithoutLine(t, s, "push_notification_driver2 = ox:")
			}, []string{"lua"}, ""},
			{"2.3", "OX alone", func(t *testing.T, s string) string {
				s = confWithoutLine(t, s, "push_notification_driver = lua:")
				return confRenameLine(t, s, "push_notification_driver2 = ox:", "push_notification_driver = ox:")
			}, []string{"ox"}, ""},
			{"2.3", "OX alone without the rename (wrong)", func(t *testing.T, s string) string {
				return confWithoutLine(t, s, "push_notification_driver = lua:")
			}, nil, "push_notification_driver is missing"},
			{"2.4", "Lua and OX, as shipped", nil, []string{"lua", "ox"}, ""},
			{"2.4", "Lua alone", func(t *testing.T, s string) string {
				return confWithoutSection(t, s, "push_notification ox {")
			}, []string{"lua"}, ""},
			{"2.4", "OX alone", func(t *testing.T, s string) string {
				return confWithoutSection(t, s, "push_notification lua {")
			}, []string{"ox"}, ""},
		}
		for _, v := range variants {
			t.Run(v.version+" "+v.name, func(t *testing.T) {
				text := files[v.version]
				if v.edit != nil {
					text = v.edit(t, text)
				}
				got, err := drivers[v.version](parse(t, text))
				if v.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), v.wantErr) {
						t.Fatalf("drivers %v, error %v; want an error containing %q", got, err, v.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(got) != fmt.Sprint(v.want) {
					t.Fatalf("drivers %v, want %v", got, v.want)
				}
			})
		}
	})

	// Both files must tell Dovecot the same about pushproxy, with the
	// placeholders the README's install steps replace.
	t.Run("2.3 and 2.4 agree", func(t *testing.T) {
		confs := map[string]pushproxyConf{
			"2.3": confPushproxy23(parse(t, files["2.3"])),
			"2.4": confPushproxy24(parse(t, files["2.4"])),
		}
		checks := []struct {
			what string
			get  func(pushproxyConf) string
			want string
		}{
			{"Lua script", func(c pushproxyConf) string { return c.luaScript }, "/etc/dovecot/pushproxy.lua"},
			{"Lua ingest URL", func(c pushproxyConf) string { return c.luaSettings["pushproxy_url"] }, "http://127.0.0.1:8025/v1/dovecot/lua"},
			{"Lua user", func(c pushproxyConf) string { return c.luaSettings["pushproxy_user"] }, "dovecot"},
			{"Lua password", func(c pushproxyConf) string { return c.luaSettings["pushproxy_password"] }, "CHANGE-ME"},
			{"Lua settings", func(c pushproxyConf) string { return fmt.Sprint(c.luaSettings) },
				"map[pushproxy_max_events:200 pushproxy_password:CHANGE-ME pushproxy_timeout:2 pushproxy_url:http://127.0.0.1:8025/v1/dovecot/lua pushproxy_user:dovecot]"},
			{"OX ingest URL", func(c pushproxyConf) string { return c.oxURL }, "http://dovecot:CHANGE-ME@127.0.0.1:8025/v1/dovecot/ox"},
			{"OX user from METADATA", func(c pushproxyConf) string { return fmt.Sprint(c.oxUserFromMeta) }, "true"},
			{"mail plugins", func(c pushproxyConf) string { return fmt.Sprint(c.plugins) }, "[mail_lua notify push_notification push_notification_lua]"},
			{"METADATA store", func(c pushproxyConf) string { return fmt.Sprint(c.attributeStore) }, "true"},
			{"IMAP METADATA", func(c pushproxyConf) string { return fmt.Sprint(c.imapMetadata) }, "true"},
		}
		for _, c := range checks {
			for _, version := range []string{"2.3", "2.4"} {
				if got := c.get(confs[version]); got != c.want {
					t.Errorf("%s file: %s is %q, want %q", version, c.what, got, c.want)
				}
			}
		}
	})

	t.Run("2.4 syntax", func(t *testing.T) {
		text := files["2.4"]
		nodes := parse(t, text)
		var commented [][]*confNode
		for _, run := range confCommentedOut(text) {
			commented = append(commented, parse(t, run))
		}
		// everything: the live configuration and the commented-out blocks an
		// operator may enable, which must be 2.4 syntax as well.
		everything := append([][]*confNode{nodes}, commented...)

		// Setting names of 2.3 that 2.4 replaced, wherever they appear.
		// (Inside a push_notification block "driver" is 2.4's
		// push_notification_driver; the numbered top-level keys are 2.3's.)
		renamed := map[string]string{
			"mail_attribute_dict":    "a dict in mail_attribute { }",
			"mail_location":          "mail_driver and mail_path",
			"disable_plaintext_auth": "auth_allow_cleartext",
			"args":                   "driver-specific settings such as passwd_file_path",
			"pass":                   "result_success = continue",
			"address":                "listen",
		}
		for i, part := range everything {
			where := "line"
			if i > 0 {
				where = fmt.Sprintf("commented-out block %d, line", i)
			}
			confWalk(part, func(_ []*confNode, n *confNode) {
				switch {
				case pushDriverKeyRe.MatchString(n.key):
					t.Errorf("%s %d: %s is 2.3 syntax; 2.4 uses push_notification <name> { driver = ... }", where, n.line, n.key)
				case n.kind == confSection && n.key == "plugin":
					t.Errorf("%s %d: 2.4 has no plugin { } section", where, n.line)
				case n.kind == confSetting && n.key == "mail_plugins":
					t.Errorf("%s %d: 2.4 lists plugins as mail_plugins { name = yes }, not mail_plugins = %s", where, n.line, n.value)
				case renamed[n.key] != "":
					t.Errorf("%s %d: %s is 2.3 syntax; 2.4 uses %s", where, n.line, n.key, renamed[n.key])
				case strings.Contains(n.value, "%h") || strings.Contains(n.value, "%u") || strings.Contains(n.value, "%d"):
					t.Errorf("%s %d: %s uses a one-letter %%variable, which 2.4 removed", where, n.line, n.value)
				}
			})
		}

		// Only 2.4's names inside the push_notification blocks.
		allowed := map[string]map[string]bool{
			"lua": {"driver": true, "lua_file": true, "lua_settings": true},
			"ox":  {"driver": true, "ox_url": true, "ox_user_from_metadata": true, "ox_cache_ttl": true},
		}
		for _, block := range confSections(nodes, "push_notification") {
			driver, _ := confGet(block.children, "driver")
			for _, n := range block.children {
				if !allowed[driver][n.key] {
					t.Errorf("line %d: %s in push_notification %s is not a 2.4 setting of the %s driver", n.line, n.key, block.arg, driver)
				}
			}
		}

		// The version settings must open dovecot.conf, so this conf.d file
		// names them in its header for a hand-written dovecot.conf and does
		// not set them itself.
		confWalk(nodes, func(_ []*confNode, n *confNode) {
			if n.key == "dovecot_config_version" || n.key == "dovecot_storage_version" {
				t.Errorf("line %d: %s belongs at the top of dovecot.conf, not in a conf.d file", n.line, n.key)
			}
		})
		version := regexp.MustCompile(`^2\.4\.[0-9]+$`)
		if len(commented) == 0 {
			t.Fatal("the 2.4 file has no commented-out settings")
		}
		header := confStrings(commented[0])
		for _, key := range []string{"dovecot_config_version", "dovecot_storage_version"} {
			if !version.MatchString(header[key]) {
				t.Errorf("the 2.4 file's header gives %s = %q, want a 2.4.N version", key, header[key])
			}
		}

		// The optional blocks: the doveadm HTTP API that the reconciler
		// reads (README.md) and an IMAP master user.
		optional := []struct {
			what  string
			check func(nodes []*confNode) bool
		}{
			{"doveadm HTTP API on 127.0.0.1:8080 with an API key", func(nodes []*confNode) bool {
				if _, ok := confGet(nodes, "doveadm_api_key"); !ok {
					return false
				}
				for _, service := range confSections(nodes, "service") {
					for _, listener := range confSections(service.children, "inet_listener") {
						s := confStrings(listener.children)
						if service.arg == "doveadm" && listener.arg == "http" && s["listen"] == "127.0.0.1" && s["port"] == "8080" {
							return true
						}
					}
				}
				return false
			}},
			{"IMAP master user (user*master) that must name an existing user", func(nodes []*confNode) bool {
				if v, _ := confGet(nodes, "auth_master_user_separator"); v != "*" {
					return false
				}
				for _, passdb := range confSections(nodes, "passdb") {
					s := confStrings(passdb.children)
					if passdb.arg != "" && s["driver"] == "passwd-file" && s["passwd_file_path"] != "" && s["master"] == "yes" && s["result_success"] == "continue" {
						return true
					}
				}
				return false
			}},
		}
		for _, o := range optional {
			found := false
			for _, part := range commented {
				found = found || o.check(part)
			}
			if !found {
				t.Errorf("the 2.4 file has no commented-out block for the %s", o.what)
			}
		}
	})
}
