// agent.mjs drives credgate the way a LangChain/LangGraph agent does: it
// loads the gateway's tools with @langchain/mcp-adapters and runs tool calls
// through LangGraph's ToolNode, the node an agent graph uses to execute the
// model's tool calls. It prints, as one JSON document on stdout, the
// ToolMessage each call produced: what the agent's model reads next.
//
// usage: node agent.mjs URL TOOL ARGS_JSON [TOOL ARGS_JSON ...]
//
// Run from e2e/ (or with NODE_PATH=e2e/node_modules) so the pinned packages resolve.
import { MultiServerMCPClient } from "@langchain/mcp-adapters";
import { AIMessage } from "@langchain/core/messages";
import { ToolNode } from "@langchain/langgraph/prebuilt";

const [url, ...rest] = process.argv.slice(2);
if (!url || rest.length === 0 || rest.length % 2 !== 0) {
  console.error("usage: node agent.mjs URL TOOL ARGS_JSON [TOOL ARGS_JSON ...]");
  process.exit(2);
}
const calls = [];
for (let i = 0; i < rest.length; i += 2) {
  calls.push({ name: rest[i], args: JSON.parse(rest[i + 1]), id: `call_${i / 2}`, type: "tool_call" });
}

const client = new MultiServerMCPClient({
  mcpServers: { gw: { transport: "http", url, reconnect: { enabled: false } } },
  throwOnLoadError: true,
  prefixToolNameWithServerName: false,
  useStandardContentBlocks: true,
});

function plain(msg) {
  return {
    type: msg.getType(),
    name: msg.name,
    tool_call_id: msg.tool_call_id,
    status: msg.status,
    content: msg.content,
    artifact: msg.artifact ?? null,
  };
}

try {
  const tools = await client.getTools();
  const names = tools.map((t) => t.name);
  for (const c of calls) {
    if (!names.includes(c.name)) throw new Error(`tool ${c.name} not loaded from the gateway; have ${names.join(", ")}`);
  }

  // 1. As a LangGraph agent runs them: an AIMessage with tool_calls into ToolNode.
  const node = new ToolNode(tools);
  const out = await node.invoke({ messages: [new AIMessage({ content: "", tool_calls: calls })] });
  const toolNode = out.messages.map(plain);

  // 2. The tool itself, invoked with a ToolCall (returns a ToolMessage, or throws).
  const direct = [];
  for (const c of calls) {
    const tool = tools.find((t) => t.name === c.name);
    try {
      direct.push(plain(await tool.invoke(c)));
    } catch (e) {
      direct.push({ thrown: e?.name ?? "Error", message: String(e?.message ?? e) });
    }
  }
  process.stdout.write(JSON.stringify({ tools: names, toolNode, direct }) + "\n");
} finally {
  await client.close();
}
