package main

// The fixtures the official conformance suite (@modelcontextprotocol/conformance
// 0.1.16, "server" mode) calls by name. Names, arguments and results follow
// the scenario descriptions in that package's dist/index.js.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

const (
	// A 1x1 red PNG and a silent WAV, as in the suite's reference server.
	pngBase64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
	wavBase64 = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="
)

func mustBase64(s string) []byte {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

var (
	pngData = mustBase64(pngBase64)
	wavData = mustBase64(wavBase64)
)

func addConformanceFixtures(server *mcp.Server) {
	addFixtureTools(server)
	addFixtureResources(server)
	addFixturePrompts(server)
}

func noArgs(name, desc string, h func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error)) (*mcp.Tool, mcp.ToolHandler) {
	return &mcp.Tool{Name: name, Description: desc, InputSchema: json.RawMessage(`{"type":"object","properties":{}}`)}, h
}

func addFixtureTools(server *mcp.Server) {
	server.AddTool(noArgs("test_simple_text", "Returns simple text content.",
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return text("This is a simple text response for testing."), nil
		}))
	server.AddTool(noArgs("test_image_content", "Returns image content.",
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.ImageContent{Data: pngData, MIMEType: "image/png"}}}, nil
		}))
	server.AddTool(noArgs("test_audio_content", "Returns audio content.",
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.AudioContent{Data: wavData, MIMEType: "audio/wav"}}}, nil
		}))
	server.AddTool(noArgs("test_embedded_resource", "Returns an embedded resource.",
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.EmbeddedResource{Resource: &mcp.ResourceContents{
				URI: "test://embedded-resource", MIMEType: "text/plain", Text: "This is an embedded resource content.",
			}}}}, nil
		}))
	server.AddTool(noArgs("test_multiple_content_types", "Returns text, image and resource content.",
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{
				&mcp.TextContent{Text: "Multiple content types test:"},
				&mcp.ImageContent{Data: pngData, MIMEType: "image/png"},
				&mcp.EmbeddedResource{Resource: &mcp.ResourceContents{
					URI: "test://mixed-content-resource", MIMEType: "application/json", Text: `{"test":"data","value":123}`,
				}},
			}}, nil
		}))
	server.AddTool(noArgs("test_tool_with_logging", "Sends three info log notifications while running.",
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			for i, msg := range []string{"Tool execution started", "Tool processing data", "Tool execution completed"} {
				if i > 0 {
					if err := pause(ctx, 50*time.Millisecond); err != nil {
						return nil, err
					}
				}
				_ = req.Session.Log(ctx, &mcp.LoggingMessageParams{Level: "info", Logger: "testupstream", Data: msg})
			}
			return text("Tool with logging executed successfully"), nil
		}))
	server.AddTool(noArgs("test_tool_with_progress", "Reports progress 0, 50 and 100 of 100.",
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			token := req.Params.GetProgressToken()
			for i, p := range []float64{0, 50, 100} {
				if i > 0 {
					if err := pause(ctx, 50*time.Millisecond); err != nil {
						return nil, err
					}
				}
				if token != nil {
					_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: token, Progress: p, Total: 100})
				}
			}
			return text(fmt.Sprintf("Progress tool completed (token %v)", token)), nil
		}))
	server.AddTool(noArgs("test_error_handling", "Always returns a tool error.",
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return errorResult("This tool intentionally returns an error for testing"), nil
		}))
	server.AddTool(&mcp.Tool{
		Name:        "test_sampling",
		Description: "Asks the client for an LLM completion of prompt.",
		InputSchema: json.RawMessage(`{"type":"object","properties":{"prompt":{"type":"string","description":"The prompt to send to the LLM"}},"required":["prompt"]}`),
	}, testSampling)
	server.AddTool(&mcp.Tool{
		Name:        "test_elicitation",
		Description: "Asks the client for user input.",
		InputSchema: json.RawMessage(`{"type":"object","properties":{"message":{"type":"string","description":"The message to show the user"}},"required":["message"]}`),
	}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		var a struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(req.Params.Arguments, &a)
		return elicitTool(ctx, req, "User response", &mcp.ElicitParams{
			Message: a.Message,
			RequestedSchema: map[string]any{
				"type": "object",
				"properties": map[string]any{
					"username": map[string]any{"type": "string", "description": "User's response"},
					"email":    map[string]any{"type": "string", "description": "User's email address"},
				},
				"required": []string{"username", "email"},
			},
		})
	})
	server.AddTool(noArgs("test_elicitation_sep1034_defaults", "Elicits with default values for every primitive type (SEP-1034).",
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return elicitTool(ctx, req, "Elicitation completed", &mcp.ElicitParams{
				Message: "Test defaults for primitives",
				RequestedSchema: map[string]any{
					"type": "object",
					"properties": map[string]any{
						"name":     map[string]any{"type": "string", "description": "User name", "default": "John Doe"},
						"age":      map[string]any{"type": "integer", "description": "User age", "default": 30},
						"score":    map[string]any{"type": "number", "description": "User score", "default": 95.5},
						"status":   map[string]any{"type": "string", "description": "User status", "enum": []string{"active", "inactive", "pending"}, "default": "active"},
						"verified": map[string]any{"type": "boolean", "description": "Verification status", "default": true},
					},
				},
			})
		}))
	server.AddTool(noArgs("test_elicitation_sep1330_enums", "Elicits with all five enum schema variants (SEP-1330).",
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			titled := func(prefix, word string) []map[string]any {
				return []map[string]any{
					{"const": prefix + "1", "title": "First " + word},
					{"const": prefix + "2", "title": "Second " + word},
					{"const": prefix + "3", "title": "Third " + word},
				}
			}
			return elicitTool(ctx, req, "Elicitation completed", &mcp.ElicitParams{
				Message: "Test enum schemas",
				RequestedSchema: map[string]any{
					"type": "object",
					"properties": map[string]any{
						"untitledSingle": map[string]any{"type": "string", "enum": []string{"option1", "option2", "option3"}},
						"titledSingle":   map[string]any{"type": "string", "oneOf": titled("value", "Option")},
						"legacyEnum": map[string]any{"type": "string", "enum": []string{"opt1", "opt2", "opt3"},
							"enumNames": []string{"Option One", "Option Two", "Option Three"}},
						"untitledMulti": map[string]any{"type": "array",
							"items": map[string]any{"type": "string", "enum": []string{"option1", "option2", "option3"}}},
						"titledMulti": map[string]any{"type": "array",
							"items": map[string]any{"anyOf": titled("value", "Choice")}},
					},
				},
			})
		}))
	server.AddTool(&mcp.Tool{
		Name:        "json_schema_2020_12_tool",
		Description: "Tool with JSON Schema 2020-12 features",
		InputSchema: json.RawMessage(`{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "$defs": {"address": {"type": "object", "properties": {"street": {"type": "string"}, "city": {"type": "string"}}}},
  "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
  "additionalProperties": false
}`),
	}, func(_ context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return text(fmt.Sprintf("JSON Schema 2020-12 tool called with: %s", req.Params.Arguments)), nil
	})
	server.AddTool(noArgs("test_reconnection", "Closes the SSE stream mid-call and answers after the client reconnects (SEP-1699).",
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			if req.Extra != nil && req.Extra.CloseSSEStream != nil {
				req.Extra.CloseSSEStream(mcp.CloseSSEStreamArgs{RetryAfter: 10 * time.Millisecond})
			}
			// Give the client time to reconnect with Last-Event-ID; the event
			// store replays the result if it is sent earlier anyway.
			if err := pause(ctx, 100*time.Millisecond); err != nil {
				return nil, err
			}
			return text("Reconnection test completed successfully."), nil
		}))
}

// pause waits for d unless ctx ends first. Fixtures that must spread
// notifications over time (the suite asks for ~50ms gaps) use it.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Sampling and elicitation work on both protocol eras. On a 2026-07-28 request
// the server may not send requests to the client, so the handler returns
// InputRequests (MRTR, SEP-2322) and is called again with InputResponses. On a
// legacy session it asks the client directly, so a failure becomes an isError
// result of this tool rather than a JSON-RPC error of the SDK's MRTR shim.
const inputID = "input"

func legacy(req *mcp.CallToolRequest) bool {
	return req.ProtocolVersion() < "2026-07-28"
}

func elicitTool(ctx context.Context, req *mcp.CallToolRequest, label string, p *mcp.ElicitParams) (*mcp.CallToolResult, error) {
	var res *mcp.ElicitResult
	if r, ok := req.Params.InputResponses[inputID].(*mcp.ElicitResult); ok {
		res = r
	} else if legacy(req) {
		r, err := req.Session.Elicit(ctx, p)
		if err != nil {
			return errorResult("elicitation failed: " + err.Error()), nil
		}
		res = r
	} else {
		return &mcp.CallToolResult{InputRequests: mcp.InputRequestMap{inputID: p}}, nil
	}
	content, _ := json.Marshal(res.Content)
	return text(fmt.Sprintf("%s: action=%s, content=%s", label, res.Action, content)), nil
}

func testSampling(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	var a struct {
		Prompt string `json:"prompt"`
	}
	_ = json.Unmarshal(req.Params.Arguments, &a)
	p := &mcp.CreateMessageParams{
		Messages:  []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: a.Prompt}}},
		MaxTokens: 100,
	}
	var content []mcp.Content
	switch r := req.Params.InputResponses[inputID].(type) {
	case *mcp.CreateMessageWithToolsResult:
		content = r.Content
	default:
		if !legacy(req) {
			return &mcp.CallToolResult{InputRequests: mcp.InputRequestMap{inputID: p}}, nil
		}
		//lint:ignore SA1019 the fixture exercises the deprecated sampling feature on purpose.
		res, err := req.Session.CreateMessage(ctx, p)
		if err != nil {
			return errorResult("sampling failed: " + err.Error()), nil
		}
		content = []mcp.Content{res.Content}
	}
	var parts []string
	for _, c := range content {
		if t, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, t.Text)
		}
	}
	return text("LLM response: " + strings.Join(parts, "\n")), nil
}

func addFixtureResources(server *mcp.Server) {
	static := func(uri, mime, txt string, blob []byte) mcp.ResourceHandler {
		return func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: uri, MIMEType: mime, Text: txt, Blob: blob}}}, nil
		}
	}
	server.AddResource(&mcp.Resource{URI: "test://static-text", Name: "static-text", Description: "A static text resource", MIMEType: "text/plain"},
		static("test://static-text", "text/plain", "This is the content of the static text resource.", nil))
	server.AddResource(&mcp.Resource{URI: "test://static-binary", Name: "static-binary", Description: "A static binary resource (PNG)", MIMEType: "image/png"},
		static("test://static-binary", "image/png", "", pngData))
	server.AddResource(&mcp.Resource{URI: "test://watched-resource", Name: "watched-resource", Description: "A resource clients may subscribe to", MIMEType: "text/plain"},
		static("test://watched-resource", "text/plain", "Watched resource content", nil))
	server.AddResourceTemplate(&mcp.ResourceTemplate{
		URITemplate: "test://template/{id}/data", Name: "template", Description: "A templated resource", MIMEType: "application/json",
	}, func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		id := strings.TrimSuffix(strings.TrimPrefix(req.Params.URI, "test://template/"), "/data")
		body, _ := json.Marshal(map[string]any{"id": id, "templateTest": true, "data": "Data for ID: " + id})
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, MIMEType: "application/json", Text: string(body)}}}, nil
	})
}

func addFixturePrompts(server *mcp.Server) {
	server.AddPrompt(&mcp.Prompt{Name: "test_simple_prompt", Description: "A simple prompt without arguments"},
		func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
			return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{
				{Role: "user", Content: &mcp.TextContent{Text: "This is a simple prompt for testing."}},
			}}, nil
		})
	server.AddPrompt(&mcp.Prompt{
		Name: "test_prompt_with_arguments", Description: "A prompt with two required arguments",
		Arguments: []*mcp.PromptArgument{
			{Name: "arg1", Description: "First test argument", Required: true},
			{Name: "arg2", Description: "Second test argument", Required: true},
		},
	}, func(_ context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		a := req.Params.Arguments
		return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{
			{Role: "user", Content: &mcp.TextContent{Text: fmt.Sprintf("Prompt with arguments: arg1='%s', arg2='%s'", a["arg1"], a["arg2"])}},
		}}, nil
	})
	server.AddPrompt(&mcp.Prompt{
		Name: "test_prompt_with_embedded_resource", Description: "A prompt embedding a resource",
		Arguments: []*mcp.PromptArgument{{Name: "resourceUri", Description: "URI of the resource to embed", Required: true}},
	}, func(_ context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{
			{Role: "user", Content: &mcp.EmbeddedResource{Resource: &mcp.ResourceContents{
				URI: req.Params.Arguments["resourceUri"], MIMEType: "text/plain", Text: "Embedded resource content for testing.",
			}}},
			{Role: "user", Content: &mcp.TextContent{Text: "Please process the embedded resource above."}},
		}}, nil
	})
	server.AddPrompt(&mcp.Prompt{Name: "test_prompt_with_image", Description: "A prompt with image content"},
		func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
			return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{
				{Role: "user", Content: &mcp.ImageContent{Data: pngData, MIMEType: "image/png"}},
				{Role: "user", Content: &mcp.TextContent{Text: "Please analyze the image above."}},
			}}, nil
		})
}

// complete offers values for the arguments of test_prompt_with_arguments
// (and any other argument) that start with what was typed.
func complete(_ context.Context, req *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
	candidates := []string{"paris", "park", "party", "test", "testValue1", "testValue2"}
	var values []string
	for _, c := range candidates {
		if strings.HasPrefix(c, req.Params.Argument.Value) {
			values = append(values, c)
		}
	}
	if values == nil {
		values = []string{}
	}
	return &mcp.CompleteResult{Completion: mcp.CompletionResultDetails{Values: values, Total: len(values)}}, nil
}
