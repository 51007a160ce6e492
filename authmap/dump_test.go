package authmap

import (
	"encoding/json"
	"fmt"
	"os"
	"testing"
)

func TestDump(t *testing.T) {
	if os.Getenv("DUMP") == "" {
		t.Skip()
	}
	c, _ := New(nil)
	for _, s := range loadSamples(t, os.Getenv("DUMP")) {
		f, ok := classifySample(t, c, s, "")
		b, _ := json.Marshal(f)
		fmt.Printf("%-55s %v %s\n    %s\n", s.ID, ok, b, f.Error())
	}
}
