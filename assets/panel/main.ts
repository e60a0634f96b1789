document.getElementById("app")!.textContent = "latchkey";
