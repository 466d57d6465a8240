// Renders /openapi.json as a plain list of endpoints: no third-party viewer, no network.
"use strict";

function node(tag, text, cls) {
  const n = document.createElement(tag);
  if (text !== undefined) n.textContent = text;
  if (cls) n.className = cls;
  return n;
}

function resolve(doc, schema) {
  if (schema && schema.$ref && schema.$ref.startsWith("#/")) {
    return schema.$ref.slice(2).split("/").reduce((o, k) => o[k], doc);
  }
  return schema;
}

function schemaBlock(doc, schema, label) {
  const details = node("details");
  details.appendChild(node("summary", label));
  details.appendChild(node("pre", JSON.stringify(resolve(doc, schema), null, 2)));
  return details;
}

function render(doc) {
  document.getElementById("title").textContent = `${doc.info.title} ${doc.info.version}`;
  document.getElementById("description").textContent = doc.info.description || "";
  const main = document.getElementById("endpoints");
  main.replaceChildren();
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const section = node("section");
      const h = node("h2");
      h.appendChild(node("span", method.toUpperCase(), `method ${method}`));
      h.appendChild(document.createTextNode(path));
      section.appendChild(h);
      section.appendChild(node("p", op.summary || ""));
      if (op.requestBody) {
        section.appendChild(node("h3", "Request body"));
        for (const [type, media] of Object.entries(op.requestBody.content)) {
          section.appendChild(schemaBlock(doc, media.schema, type));
        }
      }
      section.appendChild(node("h3", "Responses"));
      const table = node("table");
      for (const [code, response] of Object.entries(op.responses)) {
        const row = table.insertRow();
        row.appendChild(node("td", code)).className = "code";
        const td = row.insertCell();
        td.appendChild(node("span", response.description || ""));
        for (const [type, media] of Object.entries(response.content || {})) {
          td.appendChild(media.schema ? schemaBlock(doc, media.schema, type) : node("div", type));
        }
      }
      section.appendChild(table);
      main.appendChild(section);
    }
  }
}

fetch("/openapi.json")
  .then((r) => r.json())
  .then(render)
  .catch((err) => {
    document.getElementById("endpoints").textContent = `Could not read /openapi.json: ${err.message}`;
  });
