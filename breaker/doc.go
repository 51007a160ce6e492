// Package breaker will hold the gateway's circuit breakers, per upstream and per
// credential, on github.com/sony/gobreaker/v2. It knows nothing of MCP: the
// gateway reports classified outcomes (success, failure, excluded, auth failure)
// and asks whether a target may be called.
//
// It is empty until the breaker issue lands; the directory exists so the
// package layout (routing, breaker, authmap as leaves under gateway) is fixed
// from the start.
package breaker
