package sources

// The JSON files operators write by hand (the static registries and lists
// of the mail sources): unknown fields are an error, so a typo does not
// silently drop a setting.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
)

// LoadFile reads the JSON document at path into an F, refusing unknown fields,
// and builds the result from it with build. what names the file in errors,
// e.g. "EWS subscription registry".
func LoadFile[F, T any](path, what string, build func(F) (T, error)) (T, error) {
	var zero T
	data, err := os.ReadFile(path)
	if err != nil {
		return zero, fmt.Errorf("reading %s: %w", what, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f F
	if err := dec.Decode(&f); err != nil {
		return zero, fmt.Errorf("parsing %s %s: %w", what, path, err)
	}
	t, err := build(f)
	if err != nil {
		return zero, fmt.Errorf("%s %s: %w", what, path, err)
	}
	return t, nil
}
