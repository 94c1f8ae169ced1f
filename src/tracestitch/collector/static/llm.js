// LLM runs as a conversation: the message shapes of OpenAI, Anthropic and LangChain, read from a
// run's inputs and outputs into {role, text, calls} turns. Text only: rendering is the caller's,
// through textContent like every other value.
"use strict";

const LLM = (() => {
  const ROLES = { human: "user", ai: "assistant", system: "system", tool: "tool", function: "tool",
                  HumanMessage: "user", AIMessage: "assistant", SystemMessage: "system",
                  ToolMessage: "tool", AIMessageChunk: "assistant", HumanMessageChunk: "user" };

  // Message content: a string, or a list of parts (OpenAI {type: "text", text}, Anthropic text
  // blocks, tool_use / tool_result blocks).
  function text(content) {
    if (content == null) return "";
    if (typeof content === "string") return content;
    if (Array.isArray(content)) {
      return content.map((part) => {
        if (typeof part === "string") return part;
        if (part && typeof part.text === "string") return part.text;
        if (part && part.type === "tool_result") return text(part.content);
        if (part && part.type === "image_url") return "[image]";
        return "";
      }).filter(Boolean).join("\n");
    }
    return typeof content === "object" ? JSON.stringify(content) : String(content);
  }

  function calls(message) {
    const found = [];
    for (const call of message.tool_calls || []) {
      const fn = call.function || call;
      found.push({ name: fn.name, args: fn.arguments ?? fn.args });
    }
    if (Array.isArray(message.content)) {
      for (const part of message.content) {
        if (part && part.type === "tool_use") found.push({ name: part.name, args: part.input });
      }
    }
    if (message.function_call) found.push({ name: message.function_call.name, args: message.function_call.arguments });
    return found;
  }

  // One message in any of the shapes: {role, content}, LangChain's {type, content} or its
  // serialised {lc, id: [..., "HumanMessage"], kwargs: {...}}.
  function turn(message) {
    if (!message || typeof message !== "object") return typeof message === "string" ? { role: "user", text: message, calls: [] } : null;
    if (message.lc && message.kwargs) {
      const kind = Array.isArray(message.id) ? message.id[message.id.length - 1] : "";
      const inner = message.kwargs;
      return { role: ROLES[kind] || ROLES[inner.type] || inner.role || "message", text: text(inner.content), calls: calls(inner) };
    }
    const role = message.role || ROLES[message.type];
    if (!role || !("content" in message || message.tool_calls)) return null;
    return { role: ROLES[role] || role, text: text(message.content), calls: calls(message) };
  }

  function turns(list) {
    if (!Array.isArray(list)) return [];
    // LangChain batches: a list of lists of messages; one conversation is shown.
    const flat = list.length && Array.isArray(list[0]) ? list[0] : list;
    return flat.map(turn).filter(Boolean);
  }

  function fromInputs(inputs) {
    if (!inputs || typeof inputs !== "object") return [];
    const out = [];
    // Anthropic puts the system prompt beside the messages.
    if (inputs.system) out.push({ role: "system", text: text(inputs.system), calls: [] });
    out.push(...turns(inputs.messages));
    if (!out.length && Array.isArray(inputs.prompts)) {
      out.push(...inputs.prompts.map((p) => ({ role: "user", text: text(p), calls: [] })));
    }
    return out;
  }

  function fromOutputs(outputs) {
    if (!outputs || typeof outputs !== "object") return [];
    if (Array.isArray(outputs.choices)) {  // OpenAI chat completions
      return outputs.choices.map((c) => turn(c.message || { role: "assistant", content: c.text })).filter(Boolean);
    }
    if (outputs.role === "assistant" || outputs.type === "message") return [turn({ role: "assistant", ...outputs })].filter(Boolean);  // Anthropic
    if (Array.isArray(outputs.generations)) {  // LangChain LLMResult
      const first = Array.isArray(outputs.generations[0]) ? outputs.generations[0][0] : outputs.generations[0];
      if (!first) return [];
      return [first.message ? turn(first.message) : { role: "assistant", text: text(first.text), calls: [] }].filter(Boolean);
    }
    for (const key of ["message", "output"]) {
      if (outputs[key] && typeof outputs[key] === "object") {
        const found = turn(outputs[key]);
        if (found) return [found];
      }
    }
    return turns(outputs.messages);
  }

  // The run's conversation (inputs then outputs), or [] when it has none.
  function conversation(run) {
    const before = fromInputs(run.inputs);
    if (!before.length) return [];
    return [...before, ...fromOutputs(run.outputs).map((t) => ({ ...t, output: true }))];
  }

  // The model a run names: the LangSmith metadata first, then the invocation parameters.
  function model(run) {
    const extra = run.extra || {};
    const meta = extra.metadata || {};
    const params = extra.invocation_params || {};
    return meta.ls_model_name || params.model || params.model_name || (run.outputs && run.outputs.model) || null;
  }

  return { conversation, model };
})();
