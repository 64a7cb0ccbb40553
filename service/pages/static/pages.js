/* The model page: predict as the form changes, and predict a whole CSV file.
 *
 * Plain JavaScript, no framework, no build step. Every prediction goes through
 * the JSON API that programs call; this file only draws the answers.
 */
(function () {
  "use strict";

  var DEBOUNCE_MS = 250;
  var PREVIEW_ROWS = 20;
  var ERRORS_SHOWN = 50;

  var form = document.getElementById("predict-form");
  if (!form) {
    return;
  }
  var modelName = form.dataset.model;
  var predictUrl = form.dataset.predictUrl;
  var fields = Array.prototype.slice.call(form.querySelectorAll(".field"));
  var result = document.getElementById("result");
  var resultStatus = document.getElementById("result-status");
  var resultLabel = document.getElementById("result-label");
  var resultMeta = document.getElementById("result-meta");
  var bars = document.getElementById("bars");
  var formError = document.getElementById("form-error");
  var copyButton = document.getElementById("copy-curl");
  var copyStatus = document.getElementById("copy-status");
  var curlText = document.getElementById("curl");

  // --- Reading the form ----------------------------------------------------------

  function control(field) {
    return field.querySelector("[data-feature]");
  }

  function valueOf(field) {
    var input = control(field);
    var type = field.dataset.type;
    if (type === "bool") {
      return input.checked;
    }
    if (type === "category") {
      return input.value;
    }
    // A number box the browser cannot read (empty, or not a number) is sent as
    // null, so that the API's own message says what is wrong with it.
    var raw = input.value.trim();
    if (raw === "") {
      return null;
    }
    var number = Number(raw);
    return Number.isFinite(number) ? number : raw;
  }

  function currentRow() {
    var row = {};
    fields.forEach(function (field) {
      row[field.dataset.name] = valueOf(field);
    });
    return row;
  }

  // --- Sliders and number boxes move together -------------------------------------

  form.querySelectorAll("input[type=range][data-slider-for]").forEach(function (slider) {
    var box = document.getElementById(slider.dataset.sliderFor);
    slider.addEventListener("input", function () {
      box.value = slider.value;
    });
    box.addEventListener("input", function () {
      if (box.value !== "" && Number.isFinite(Number(box.value))) {
        slider.value = box.value; // the browser keeps the slider within its range
      }
    });
  });

  function syncSliders() {
    form.querySelectorAll("input[type=range][data-slider-for]").forEach(function (slider) {
      var box = document.getElementById(slider.dataset.sliderFor);
      if (box.value !== "") {
        slider.value = box.value;
      }
    });
  }

  // --- Predicting ---------------------------------------------------------------

  var timer = null;
  var sequence = 0;
  var inFlight = null;

  var lastSent = null;

  function requestBody() {
    return JSON.stringify({ features: currentRow() });
  }

  function schedule() {
    window.clearTimeout(timer);
    if (requestBody() === lastSent) {
      // Nothing changed (a "change" after its "input", a blur): the answer shown stands.
      return;
    }
    result.classList.add("is-pending");
    timer = window.setTimeout(predict, DEBOUNCE_MS);
  }

  form.addEventListener("input", schedule);
  form.addEventListener("change", schedule);
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    window.clearTimeout(timer);
    predict();
  });
  form.addEventListener("reset", function () {
    // The browser restores the values after this event: read them on the next turn.
    window.setTimeout(function () {
      syncSliders();
      window.clearTimeout(timer);
      predict();
    }, 0);
  });

  function shellQuote(text) {
    return "'" + text.replace(/'/g, "'\\''") + "'";
  }

  function curlFor(url, body) {
    return [
      "curl -s " + shellQuote(window.location.origin + url),
      "-H " + shellQuote("Content-Type: application/json"),
      "-d " + shellQuote(body),
    ].join(" \\\n  ");
  }

  function predict() {
    var mine = ++sequence;
    if (inFlight) {
      inFlight.abort();
    }
    inFlight = new AbortController();
    var body = requestBody();
    lastSent = body;
    curlText.textContent = curlFor(predictUrl, body);
    copyButton.disabled = false;
    result.classList.add("is-pending");
    resultStatus.textContent = "Predicting…";
    var started = performance.now();
    var response;
    fetch(predictUrl, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: body,
      signal: inFlight.signal,
    })
      .then(function (answer) {
        response = answer;
        return answer.json();
      })
      .then(function (answer) {
        if (mine !== sequence) {
          return; // a newer request has been sent since
        }
        var elapsed = performance.now() - started;
        if (response.ok) {
          showAnswer(answer, elapsed, response.headers.get("X-Process-Time"));
        } else {
          showProblem(answer, response.status);
        }
      })
      .catch(function (error) {
        if (error.name === "AbortError" || mine !== sequence) {
          return;
        }
        lastSent = null; // the same row may be tried again
        showFailure("The service did not answer: " + error.message);
      });
  }

  // --- Drawing answers -----------------------------------------------------------

  function formatNumber(value) {
    if (typeof value !== "number") {
      return String(value);
    }
    return Number(value.toPrecision(6)).toLocaleString("en", { maximumFractionDigits: 6 });
  }

  function formatMs(ms) {
    return ms < 10 ? ms.toFixed(1) + " ms" : Math.round(ms) + " ms";
  }

  function clearErrors() {
    fields.forEach(function (field) {
      var error = field.querySelector(".field-error");
      error.hidden = true;
      error.textContent = "";
      control(field).removeAttribute("aria-invalid");
      field.classList.remove("has-error");
    });
    formError.hidden = true;
    formError.textContent = "";
  }

  function showAnswer(answer, elapsed, serverSeconds) {
    clearErrors();
    result.classList.remove("is-pending", "is-stale", "is-failed");
    resultStatus.textContent = modelName + " predicts";
    var prediction = answer.prediction;
    resultLabel.textContent = formatNumber(prediction);
    resultLabel.title = String(prediction);
    var timing = "answered in " + formatMs(elapsed);
    if (serverSeconds !== null && Number.isFinite(Number(serverSeconds))) {
      timing += " (" + formatMs(Number(serverSeconds) * 1000) + " in the service)";
    }
    resultMeta.textContent = "Model " + answer.model + " version " + answer.model_version + " · " + timing;
    resultMeta.dataset.modelVersion = answer.model_version;
    if (bars && answer.probabilities) {
      var predicted = typeof prediction === "string" ? prediction : JSON.stringify(prediction);
      bars.querySelectorAll(".bar").forEach(function (bar) {
        var probability = answer.probabilities[bar.dataset.class];
        var share = typeof probability === "number" ? probability : 0;
        bar.dataset.probability = String(share);
        bar.querySelector(".bar-fill").style.width = (share * 100).toFixed(2) + "%";
        bar.querySelector(".bar-value").textContent = (share * 100).toFixed(1) + "%";
        var isPredicted = bar.dataset.class === predicted;
        bar.classList.toggle("is-predicted", isPredicted);
        var name = bar.querySelector(".bar-name");
        name.textContent = bar.dataset.class + (isPredicted ? " ✓" : "");
      });
    }
  }

  function messages(value) {
    if (Array.isArray(value)) {
      return value.map(messages).join(" ");
    }
    if (value && typeof value === "object") {
      return Object.keys(value)
        .map(function (key) {
          // "_row" and "_body" are faults of the whole row or body, not of a field.
          return (key.charAt(0) === "_" ? "" : key + ": ") + messages(value[key]);
        })
        .join("; ");
    }
    return String(value);
  }

  function showProblem(problem, status) {
    clearErrors();
    result.classList.remove("is-pending");
    result.classList.add("is-stale");
    var errors = (problem && problem.errors) || {};
    var unplaced = [];
    Object.keys(errors).forEach(function (name) {
      var field = fields.find(function (candidate) {
        return candidate.dataset.name === name;
      });
      if (!field) {
        unplaced.push((name.charAt(0) === "_" ? "" : name + ": ") + messages(errors[name]));
        return;
      }
      var error = field.querySelector(".field-error");
      error.textContent = messages(errors[name]);
      error.hidden = false;
      control(field).setAttribute("aria-invalid", "true");
      field.classList.add("has-error");
    });
    var placed = Object.keys(errors).length - unplaced.length;
    if (unplaced.length || !placed) {
      formError.textContent = unplaced.length ? unplaced.join(" ") : (problem && problem.detail) || "Error " + status;
      formError.hidden = false;
    }
    resultStatus.textContent =
      status === 422 && placed
        ? "Fix the highlighted value" + (placed > 1 ? "s" : "") + " to predict again."
        : (problem && problem.title) || "The service answered " + status + ".";
  }

  function showFailure(text) {
    result.classList.remove("is-pending");
    result.classList.add("is-failed");
    resultStatus.textContent = text;
  }

  // --- Copy as curl ---------------------------------------------------------------

  copyButton.addEventListener("click", function () {
    var text = curlText.textContent;
    function copied() {
      copyStatus.textContent = "Copied.";
      window.setTimeout(function () {
        copyStatus.textContent = "";
      }, 2500);
    }
    function fallback() {
      // No clipboard API (a page served over plain HTTP from another host):
      // show the command selected, ready for Ctrl+C.
      var details = curlText.closest("details");
      details.open = true;
      var range = document.createRange();
      range.selectNodeContents(curlText);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      var ok = false;
      try {
        ok = document.execCommand("copy");
      } catch (ignored) {
        ok = false;
      }
      copyStatus.textContent = ok ? "Copied." : "Selected: press Ctrl+C to copy.";
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(copied, fallback);
    } else {
      fallback();
    }
  });

  // --- A whole file ---------------------------------------------------------------

  var csvForm = document.getElementById("csv-form");
  var csvFile = document.getElementById("csv-file");
  var csvStatus = document.getElementById("csv-status");
  var csvDownload = document.getElementById("csv-download");
  var csvErrors = document.getElementById("csv-errors");
  var csvErrorList = document.getElementById("csv-error-list");
  var csvPreview = document.getElementById("csv-preview");
  var csvUrl = csvForm.dataset.csvUrl;
  var downloadUrl = null;

  function csvField(value) {
    var text = String(value === null ? "" : value);
    return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  function saveBlob(blob, filename) {
    var url = URL.createObjectURL(blob);
    var link = document.createElement("a");
    link.href = url;
    link.download = filename;
    document.body.appendChild(link);
    link.click();
    link.remove();
    window.setTimeout(function () {
      URL.revokeObjectURL(url);
    }, 10000);
  }

  document.getElementById("csv-template").addEventListener("click", function () {
    var row = currentRow();
    var names = Object.keys(row);
    var text =
      names.map(csvField).join(",") +
      "\r\n" +
      names
        .map(function (name) {
          return csvField(row[name]);
        })
        .join(",") +
      "\r\n";
    saveBlob(new Blob([text], { type: "text/csv" }), modelName + "-template.csv");
  });

  /* A CSV reader fed in chunks (RFC 4180: quoted fields, doubled quotes, CRLF or LF). */
  function csvReader(onRow) {
    var field = "";
    var row = [];
    var quoted = false;
    var quoteSeen = false;
    var afterCR = false;
    function endField() {
      row.push(field);
      field = "";
    }
    function endRow() {
      endField();
      if (!(row.length === 1 && row[0] === "")) {
        onRow(row);
      }
      row = [];
    }
    return {
      push: function (text) {
        for (var i = 0; i < text.length; i++) {
          var c = text.charAt(i);
          if (quoted) {
            if (quoteSeen) {
              quoteSeen = false;
              if (c === '"') {
                field += '"';
                continue;
              }
              quoted = false; // the closing quote: read c as unquoted
            } else if (c === '"') {
              quoteSeen = true;
              continue;
            } else {
              field += c;
              continue;
            }
          }
          var wasCR = afterCR;
          afterCR = false;
          if (c === '"' && field === "") {
            quoted = true;
          } else if (c === ",") {
            endField();
          } else if (c === "\r") {
            endRow();
            afterCR = true;
          } else if (c === "\n") {
            if (!wasCR) {
              endRow();
            }
          } else {
            field += c;
          }
        }
      },
      end: function () {
        if (field !== "" || row.length) {
          endRow();
        }
      },
    };
  }

  function scanCsv(blob) {
    var summary = { header: null, rows: 0, preview: [], errors: [], errorCount: 0 };
    var errorColumn = -1;
    var reader = csvReader(function (row) {
      if (summary.header === null) {
        summary.header = row;
        errorColumn = row.lastIndexOf("error");
        return;
      }
      summary.rows += 1;
      if (summary.preview.length < PREVIEW_ROWS) {
        summary.preview.push({ number: summary.rows, cells: row });
      }
      if (errorColumn >= 0 && row[errorColumn]) {
        summary.errorCount += 1;
        if (summary.errors.length < ERRORS_SHOWN) {
          summary.errors.push({ number: summary.rows, message: row[errorColumn] });
        }
      }
    });
    var stream = blob.stream().pipeThrough(new TextDecoderStream());
    var chunks = stream.getReader();
    function next() {
      return chunks.read().then(function (step) {
        if (step.done) {
          reader.end();
          return summary;
        }
        reader.push(step.value);
        return next();
      });
    }
    return next();
  }

  function resetCsv() {
    csvStatus.textContent = "";
    csvDownload.hidden = true;
    csvErrors.hidden = true;
    csvErrorList.textContent = "";
    csvPreview.hidden = true;
    csvPreview.querySelector("thead tr").textContent = "";
    csvPreview.querySelector("tbody").textContent = "";
    if (downloadUrl) {
      URL.revokeObjectURL(downloadUrl);
      downloadUrl = null;
    }
  }

  function listErrors(items, total) {
    items.forEach(function (item) {
      var li = document.createElement("li");
      var where = document.createElement("strong");
      where.textContent = item.where + ": ";
      li.appendChild(where);
      li.appendChild(document.createTextNode(item.message));
      csvErrorList.appendChild(li);
    });
    if (total > items.length) {
      var more = document.createElement("li");
      more.textContent = "and " + (total - items.length) + " more.";
      csvErrorList.appendChild(more);
    }
    csvErrors.hidden = items.length === 0;
  }

  function filenameFrom(disposition) {
    var match = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition || "");
    return match ? decodeURIComponent(match[1]) : null;
  }

  function showPreview(summary) {
    var head = csvPreview.querySelector("thead tr");
    var body = csvPreview.querySelector("tbody");
    var outputs = summary.header.map(function (name) {
      return name === "prediction" || name === "error" || name.indexOf("probability_") === 0;
    });
    var corner = document.createElement("th");
    corner.scope = "col";
    corner.textContent = "Row";
    head.appendChild(corner);
    summary.header.forEach(function (name, index) {
      var th = document.createElement("th");
      th.scope = "col";
      th.textContent = name;
      if (outputs[index]) {
        th.className = "col-out";
      }
      head.appendChild(th);
    });
    summary.preview.forEach(function (row) {
      var tr = document.createElement("tr");
      var number = document.createElement("th");
      number.scope = "row";
      number.textContent = String(row.number);
      tr.appendChild(number);
      row.cells.forEach(function (cell, index) {
        var td = document.createElement("td");
        var name = summary.header[index] || "";
        var value = cell;
        if (name.indexOf("probability_") === 0 && cell !== "" && Number.isFinite(Number(cell))) {
          value = (Number(cell) * 100).toFixed(1) + "%";
        }
        td.textContent = value;
        if (outputs[index]) {
          td.className = "col-out";
        }
        tr.appendChild(td);
      });
      if (row.cells[summary.header.lastIndexOf("error")]) {
        tr.className = "row-error";
      }
      body.appendChild(tr);
    });
    csvPreview.querySelector("caption").textContent =
      summary.rows > summary.preview.length
        ? "The first " + summary.preview.length + " of " + summary.rows + " rows, with their predictions"
        : "All " + summary.rows + " rows, with their predictions";
    csvPreview.hidden = false;
  }

  function uploadCsv() {
    var file = csvFile.files[0];
    resetCsv();
    if (!file) {
      csvStatus.textContent = "Choose a CSV file first.";
      return;
    }
    csvStatus.textContent = "Predicting " + file.name + "…";
    var started = performance.now();
    var response;
    fetch(csvUrl, { method: "POST", headers: { "Content-Type": "text/csv" }, body: file })
      .then(function (answer) {
        response = answer;
        if (!answer.ok) {
          var type = (answer.headers.get("Content-Type") || "").split(";")[0].trim();
          return (/json$/.test(type) ? answer.json() : Promise.resolve(null)).then(function (problem) {
            showCsvProblem(problem, answer.status);
            return null;
          });
        }
        return answer.blob();
      })
      .then(function (blob) {
        if (!blob) {
          return null;
        }
        var seconds = (performance.now() - started) / 1000;
        downloadUrl = URL.createObjectURL(blob);
        csvDownload.href = downloadUrl;
        var filename =
          filenameFrom(response.headers.get("Content-Disposition")) ||
          file.name.replace(/\.csv$/i, "") + "-predictions.csv";
        csvDownload.download = filename;
        return scanCsv(blob).then(function (summary) {
          if (!summary.header) {
            csvStatus.textContent = "The service answered with an empty file.";
            return;
          }
          csvDownload.textContent = "Download " + filename + " (" + summary.rows + " rows with predictions)";
          csvDownload.hidden = false;
          csvStatus.textContent =
            summary.rows +
            " row" +
            (summary.rows === 1 ? "" : "s") +
            " predicted in " +
            seconds.toFixed(1) +
            " s" +
            (summary.errorCount ? "; " + summary.errorCount + " with errors." : ", none with errors.");
          listErrors(
            summary.errors.map(function (error) {
              // The service writes "line N: field: message"; the row number is ours.
              var line = /^line (\d+): /.exec(error.message);
              return {
                where: "Row " + error.number + (line ? " (line " + line[1] + ")" : ""),
                message: line ? error.message.slice(line[0].length) : error.message,
              };
            }),
            summary.errorCount
          );
          showPreview(summary);
        });
      })
      .catch(function (error) {
        csvStatus.textContent = "The file could not be predicted: " + error.message;
      });
  }

  function showCsvProblem(problem, status) {
    csvStatus.textContent = (problem && problem.detail) || "The service answered " + status + ".";
    var errors = (problem && problem.errors) || {};
    var keys = Object.keys(errors);
    listErrors(
      keys.slice(0, ERRORS_SHOWN).map(function (key) {
        // Keyed by line ("line 3"; the header is line 1), or "_body" for the file as a whole.
        var where = /^\d+$/.test(key) ? "Line " + key : key.charAt(0) === "_" ? "File" : key;
        return { where: where.charAt(0).toUpperCase() + where.slice(1), message: messages(errors[key]) };
      }),
      keys.length
    );
  }

  csvForm.addEventListener("submit", function (event) {
    event.preventDefault();
    uploadCsv();
  });
  csvFile.addEventListener("change", function () {
    if (csvFile.files.length) {
      uploadCsv();
    }
  });

  // The form opens with the typical row: show its prediction straight away.
  syncSliders();
  predict();
})();
