//go:build !race

package gateway

// raceEnabled reports whether the race detector is on: it changes what
// allocates, so allocation budgets are not checked under it.
const raceEnabled = false
