// The only script of our own: "choose all" checkboxes. Everything works without it (the content security
// policy allows scripts from this server only, never inline ones).
document.addEventListener("change", function (event) {
  var box = event.target;
  if (!box || box.id !== "pick-all") {
    return;
  }
  var form = box.closest("form");
  if (!form) {
    return;
  }
  form.querySelectorAll('input[type="checkbox"][name="id"], input[type="checkbox"][name="seq"]').forEach(function (other) {
    other.checked = box.checked;
  });
});
