// The bench driver is a module of its own so that its side of every
// measurement (the load clients, the direct and the gateway's echo
// upstream) runs go-sdk v1.8.0 as released, the baseline issue 12's
// figures were measured against, not credgate's patched copy
// (third_party/go-sdk), which only the gateway uses.
module github.com/credgate/credgate/e2e/bench

go 1.26

require (
	github.com/google/go-cmp v0.7.0
	github.com/modelcontextprotocol/go-sdk v1.8.0
	go.yaml.in/yaml/v3 v3.0.5
)

require (
	github.com/google/jsonschema-go v0.4.3 // indirect
	github.com/segmentio/asm v1.1.3 // indirect
	github.com/segmentio/encoding v0.5.4 // indirect
	github.com/yosida95/uritemplate/v3 v3.0.2 // indirect
	golang.org/x/oauth2 v0.35.0 // indirect
	golang.org/x/sync v0.20.0 // indirect
	golang.org/x/sys v0.41.0 // indirect
	golang.org/x/time v0.15.0 // indirect
)
