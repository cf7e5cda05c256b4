// The front end of aivvm_magic's widgets, loaded by anywidget while a kernel runs them.
//
// What these widgets show is HTML the kernel made and sanitised (rendering/markdown.py): no
// script, no event handlers, no style attributes. This module only puts it in the page, keeps
// a chat transcript scrolled to its newest message, turns Enter into "send", and adds Copy and
// "Insert as a new cell" to code blocks. It never evaluates anything it is sent.

// The classes JupyterLab gives an HTML output: the same rules draw a reply, live or not.
const RENDERED = ["jp-RenderedHTMLCommon", "jp-RenderedHTML", "jp-OutputArea-output"];

// How close to the end (in pixels) a transcript counts as "at the end", and so follows.
const AT_END = 24;

function button(label, title, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.className = "aivvm-code-button";
  element.textContent = label;
  element.title = title;
  element.addEventListener("click", (event) => {
    event.preventDefault();
    event.stopPropagation();
    onClick(element);
  });
  return element;
}

function flash(element, text) {
  const label = element.dataset.label || element.textContent;
  element.dataset.label = label;
  element.textContent = text;
  setTimeout(() => {
    element.textContent = label;
  }, 1500);
}

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  // Served over plain HTTP from another host: the older way, through a selection.
  const area = document.createElement("textarea");
  area.value = text;
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.appendChild(area);
  area.select();
  const done = document.execCommand("copy");
  area.remove();
  if (!done) throw new Error("copy refused");
}

// The notebook's shared model, where JupyterLab's widget manager exposes it; null elsewhere
// (another front end), and then no "Insert" button is offered.
function sharedNotebook(model) {
  const context = model.widget_manager && model.widget_manager.context;
  const notebook = context && context.model && context.model.sharedModel;
  return notebook && typeof notebook.insertCell === "function" ? notebook : null;
}

function insertCell(model, anchor, source) {
  const notebook = sharedNotebook(model);
  if (!notebook) return false;
  let index = -1;
  const cellId = model.get("cell_id");
  if (cellId) {
    index = notebook.cells.findIndex((cell) => cell.id === cellId);
  }
  if (index < 0) {
    // No id from the kernel: the cell this output is in, by its place in the list.
    const cell = anchor.closest(".jp-Cell");
    const position = cell && Number(cell.dataset.windowedListIndex);
    index = Number.isInteger(position) ? position : notebook.cells.length - 1;
  }
  notebook.insertCell(index + 1, { cell_type: "code", source });
  return true;
}

// Give every finished code block under `root` a Copy and an "Insert as a new cell" button.
function addCodeTools(root, model, anchor) {
  const canInsert = sharedNotebook(model) !== null;
  for (const pre of root.querySelectorAll(".aivvm-reply:not(.aivvm-live) pre")) {
    const block = pre.parentElement.classList.contains("highlight") ? pre.parentElement : pre;
    if (block.querySelector(":scope > .aivvm-code-tools")) continue;
    const code = () => (pre.querySelector("code") || pre).textContent;
    const bar = document.createElement("div");
    bar.className = "aivvm-code-tools";
    bar.append(
      button("Copy", "Copy this code", (element) => {
        copyText(code()).then(
          () => flash(element, "Copied"),
          () => flash(element, "Copy failed"),
        );
      }),
    );
    if (canInsert) {
      bar.append(
        button("Insert as a new cell", "Insert this code as a new cell below", (element) => {
          flash(element, insertCell(model, anchor, code()) ? "Inserted" : "Not inserted");
        }),
      );
    }
    block.classList.add("aivvm-has-code-tools");
    block.prepend(bar);
  }
}

// A reply (or a transcript) drawn as JupyterLab draws HTML output; `follow` keeps it scrolled
// to its end unless the reader scrolled up.
function renderHTML({ model, el }) {
  el.classList.add("aivvm-html");
  const body = document.createElement("div");
  body.classList.add(...RENDERED, "aivvm-body");
  el.appendChild(body);
  let atEnd = true;
  const onScroll = () => {
    atEnd = el.scrollHeight - el.scrollTop - el.clientHeight < AT_END;
  };
  el.addEventListener("scroll", onScroll);
  const draw = () => {
    body.innerHTML = model.get("value");
    if (model.get("code_tools")) addCodeTools(body, model, el);
    if (model.get("follow") && atEnd) el.scrollTop = el.scrollHeight;
  };
  model.on("change:value", draw);
  draw();
  return () => el.removeEventListener("scroll", onScroll);
}

// Copy and Insert for the code blocks of the reply shown just before this (hidden) output.
function renderCodeTools({ model, el }) {
  el.classList.add("aivvm-code-tools-anchor");
  const child = el.closest(".jp-OutputArea-child");
  const reply = child && child.previousElementSibling;
  if (!reply) return undefined;
  const decorate = () => addCodeTools(reply, model, el);
  decorate();
  // The reply's output is drawn again when the notebook's trust changes, say.
  const observer = new MutationObserver(decorate);
  observer.observe(reply, { childList: true, subtree: true });
  return () => observer.disconnect();
}

// A message box: Enter sends, Shift+Enter starts a new line.
function renderMessageBox({ model, el }) {
  el.classList.add("aivvm-message-box");
  const area = document.createElement("textarea");
  area.className = "aivvm-message-input";
  area.rows = model.get("rows");
  area.placeholder = model.get("placeholder");
  area.value = model.get("value");
  area.setAttribute("aria-label", "Message");
  el.appendChild(area);
  area.addEventListener("input", () => {
    model.set("value", area.value);
    model.save_changes();
  });
  area.addEventListener("keydown", (event) => {
    // Keys typed here are text, not notebook shortcuts (Shift+Enter would run the cell, "a"
    // insert one): JupyterLab hears keys as they bubble. Ctrl/Cmd chords (save, say) go on.
    const chord = event.ctrlKey || event.metaKey || event.altKey;
    if (!chord || event.key === "Enter") event.stopPropagation();
    // Enter while an input method composes a character is the composition's, not ours.
    if (event.key !== "Enter" || event.shiftKey || event.isComposing || event.keyCode === 229) {
      return;
    }
    event.preventDefault();
    const text = area.value;
    if (!text.trim()) return;
    // Emptied at once, so what is typed next is not lost; a message the kernel refuses
    // comes back into the box.
    area.value = "";
    model.set("value", "");
    model.save_changes();
    model.send({ event: "send", text });
  });
  model.on("change:value", () => {
    if (area.value !== model.get("value")) area.value = model.get("value");
  });
  model.on("change:placeholder", () => {
    area.placeholder = model.get("placeholder");
  });
  model.on("change:disabled", () => {
    area.disabled = model.get("disabled");
  });
  area.disabled = model.get("disabled");
  return undefined;
}

const VIEWS = {
  html: renderHTML,
  code_tools: renderCodeTools,
  message_box: renderMessageBox,
};

export default {
  render(context) {
    const view = VIEWS[context.model.get("kind")];
    return view ? view(context) : undefined;
  },
};
