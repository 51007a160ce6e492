package authmap

import (
	_ "embed"
	"slices"
)

//go:embed schema/error.schema.json
var schema []byte

// JSONSchema returns the JSON Schema (draft 2020-12) of the Failure wire object. The caller
// gets its own copy.
func JSONSchema() []byte { return slices.Clone(schema) }
