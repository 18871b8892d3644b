/* The staff page's camera scan, a progressive enhancement: where the browser has
   BarcodeDetector, a "Scan" button reads the coupon's QR code and submits the check form.
   Live video needs getUserMedia (HTTPS or localhost); elsewhere the button takes a photo.
   Without this script, or without either API, staff type the short code. */
(function () {
  "use strict";
  var form = document.getElementById("check-form");
  var input = document.getElementById("code");
  if (!form || !input || !("BarcodeDetector" in window)) return;
  var detector;
  try {
    detector = new window.BarcodeDetector({ formats: ["qr_code"] });
  } catch (e) {
    return;
  }
  function found(codes) {
    if (!codes.length) return false;
    input.value = codes[0].rawValue;
    form.submit();
    return true;
  }
  var button = document.createElement("button");
  button.type = "button";
  button.id = "scan";
  button.className = "btn btn-quiet";
  button.textContent = form.getAttribute("data-scan-label") || "Scan";
  form.insertBefore(button, document.getElementById("scan-note"));

  var media = navigator.mediaDevices;
  if (media && media.getUserMedia) {
    var video = document.createElement("video");
    video.setAttribute("playsinline", "");
    video.muted = true;
    video.className = "scan-video";
    var stream = null;
    var stop = function () {
      if (stream) stream.getTracks().forEach(function (t) { t.stop(); });
      stream = null;
      video.remove();
      button.textContent = form.getAttribute("data-scan-label") || "Scan";
    };
    var look = function () {
      if (!stream) return;
      detector.detect(video).then(function (codes) {
        if (found(codes)) stop();
        else setTimeout(look, 200);
      }, function () { setTimeout(look, 400); });
    };
    button.addEventListener("click", function () {
      if (stream) { stop(); return; }
      media.getUserMedia({ video: { facingMode: "environment" }, audio: false }).then(function (s) {
        stream = s;
        video.srcObject = s;
        form.insertBefore(video, button);
        button.textContent = form.getAttribute("data-scan-stop") || "Stop";
        return video.play();
      }).then(look, stop);
    });
    return;
  }
  var file = document.createElement("input");
  file.type = "file";
  file.accept = "image/*";
  file.setAttribute("capture", "environment");
  file.hidden = true;
  form.appendChild(file);
  button.addEventListener("click", function () { file.click(); });
  file.addEventListener("change", function () {
    if (!file.files || !file.files[0] || !window.createImageBitmap) return;
    window.createImageBitmap(file.files[0]).then(function (image) {
      return detector.detect(image);
    }).then(found, function () {});
  });
})();
