// Draws a cluster graph (GET .../unify-profile/graph) with the vendored cytoscape.js:
// members as circles (filled when in the drawn member's profile), key nodes as squares, links
// as solid edges, refused links as dashed edges labelled with the reason, and an explanation
// path highlighted on demand.

const memberLabel = (n) => `#${n.member_id} ${n.display_name || n.original_name || n.external_member_id}`;

/**
 * Draws `graph` into `container`, centred on `memberId`. `onPair(a, b)` is called when two
 * members have been clicked in turn. Returns {highlight(path), destroy()}.
 */
export function drawGraph(container, graph, memberId, onPair) {
  const elements = [];
  for (const n of graph.nodes) {
    elements.push({
      group: "nodes",
      data: n.kind === "member"
        ? { id: n.id, kind: "member", label: memberLabel(n), member_id: n.member_id, profile_id: n.profile_id }
        : { id: n.id, kind: "key", label: `${n.attribute}\n${n.value}` },
      classes: n.kind === "member" && n.profile_id === graph.profile_id ? "member same" : n.kind,
    });
  }
  for (const e of graph.edges) {
    elements.push({ group: "edges", data: { id: `e:${e.from}|${e.to}`, source: e.from, target: e.to } });
  }
  for (const e of graph.refused) {
    elements.push({
      group: "edges",
      data: { id: `r:${e.from}|${e.to}`, source: e.from, target: e.to, label: e.reason.replace(/_/g, " ") },
      classes: "refused",
    });
  }
  // eslint-disable-next-line no-undef
  const cy = cytoscape({
    container,
    elements,
    wheelSensitivity: 0.3,
    style: [
      { selector: "node", style: {
        label: "data(label)", "font-size": 11, "text-wrap": "wrap", "text-max-width": 140,
        "text-valign": "bottom", "text-margin-y": 4, color: "#1d2330",
      } },
      { selector: "node.member", style: { shape: "ellipse", width: 26, height: 26,
        "background-color": "#ffffff", "border-width": 3, "border-color": "#7a8699" } },
      { selector: "node.same", style: { "background-color": "#2458c6", "border-color": "#2458c6" } },
      { selector: "node.key", style: { shape: "round-rectangle", width: 16, height: 16,
        "background-color": "#e7ebf3", "border-width": 1, "border-color": "#7a8699" } },
      { selector: `node[id = "member:${memberId}"]`, style: { "border-color": "#1d2330", "border-width": 5 } },
      { selector: "edge", style: { width: 2, "line-color": "#9aa3b2", "curve-style": "bezier" } },
      { selector: "edge.refused", style: { "line-style": "dashed", "line-color": "#c2410c", width: 2.5,
        label: "data(label)", "font-size": 10, color: "#c2410c", "text-rotation": "autorotate",
        "text-background-color": "#fbfcfe", "text-background-opacity": 1 } },
      { selector: "edge.path", style: { "line-color": "#f2b84b", width: 5, "z-index": 10 } },
      { selector: "node.path", style: { "border-color": "#f2b84b", "border-width": 5 } },
      { selector: "node.chosen", style: { "overlay-color": "#f2b84b", "overlay-opacity": 0.35 } },
    ],
    layout: { name: "breadthfirst", roots: `[id = "member:${memberId}"]`, directed: false,
      spacingFactor: 1.1, padding: 24, animate: false },
  });

  let first = null;
  cy.on("tap", "node.member", (event) => {
    const id = event.target.data("member_id");
    if (first === null || first === id) {
      first = id;
      cy.nodes().removeClass("chosen");
      event.target.addClass("chosen");
      return;
    }
    event.target.addClass("chosen");
    const a = first;
    first = null;
    onPair(a, id);
  });

  // For tests and the curious: the instance the page drew.
  window.unifyConsole = Object.assign(window.unifyConsole || {}, { cy });

  return {
    /** Highlights an explanation path [{member_id, attribute, value}, ...]. */
    highlight(path) {
      cy.elements().removeClass("path chosen");
      for (let i = 0; i < path.length; i++) {
        const here = `member:${path[i].member_id}`;
        cy.getElementById(here).addClass("path");
        if (i === 0) continue;
        const key = `key:${path[i].attribute}:${path[i].value}`;
        const previous = `member:${path[i - 1].member_id}`;
        cy.getElementById(key).addClass("path");
        cy.getElementById(`e:${previous}|${key}`).addClass("path");
        cy.getElementById(`e:${here}|${key}`).addClass("path");
      }
    },
    destroy() { cy.destroy(); },
  };
}
