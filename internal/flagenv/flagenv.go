// Package flagenv lets every flag of a command also be set by an environment
// variable: flag "nats-url" of a command is PUSHPROXY_NATS_URL. A flag given
// on the command line wins over the environment.
package flagenv

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Prefix is the prefix of every pushproxy environment variable.
const Prefix = "PUSHPROXY_"

// EnvName is the environment variable that sets the flag name.
func EnvName(name string) string {
	return Prefix + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(name))
}

// Parse parses args into fs, then sets each flag that args did not set from
// its environment variable, looked up with getenv. A bad environment value is
// an error that names the variable.
//
// A bad command line is one line, not the whole help: "unknown flag --foo;
// see NAME --help", with NAME the flag set's name. --help prints the help
// and returns flag.ErrHelp.
func Parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	usage, out := fs.Usage, fs.Output()
	fs.Usage = func() {}
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.Usage = usage
	fs.SetOutput(out)
	switch {
	case errors.Is(err, flag.ErrHelp):
		if usage != nil {
			usage()
		} else {
			fs.PrintDefaults()
		}
		return err
	case err != nil:
		return fmt.Errorf("%s; see %s --help", oneLine(err), fs.Name())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		name := EnvName(f.Name)
		if v := getenv(name); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("environment variable %s: %w", name, err))
			}
		}
	})
	return errors.Join(errs...)
}

// oneLine rewrites the flag package's errors the way our help spells flags:
// "flag provided but not defined: -foo" is "unknown flag --foo".
func oneLine(err error) string {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
		return "unknown flag --" + strings.TrimLeft(name, "-")
	}
	return strings.Replace(msg, " -", " --", 1)
}

// SetUsage gives fs a usage text: a synopsis and description, then each flag
// with its default and its environment variable.
func SetUsage(fs *flag.FlagSet, synopsis, description string) {
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: %s\n\n", synopsis)
		if description != "" {
			fmt.Fprintf(w, "%s\n\n", strings.TrimSpace(description))
		}
		fmt.Fprintln(w, "Flags (each can also be set by the environment variable shown):")
		PrintDefaults(w, fs)
	}
}

// PrintDefaults writes one entry per flag: name, type, usage, default and
// environment variable.
func PrintDefaults(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if typ != "" {
			line += " " + typ
		}
		fmt.Fprintln(w, line)
		fmt.Fprintf(w, "\t%s", strings.ReplaceAll(usage, "\n", "\n\t"))
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" && f.DefValue != "[]" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "\n\t[%s]\n", EnvName(f.Name))
	})
}

// StringList is a flag that takes a comma-separated list or repeats.
type StringList []string

// String joins the list with commas.
func (l *StringList) String() string { return strings.Join(*l, ",") }

// Set appends the comma-separated items of v.
func (l *StringList) Set(v string) error {
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*l = append(*l, item)
		}
	}
	return nil
}
